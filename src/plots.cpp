// Raster plots with text in the built-in font (bitmap_font.hpp).
#include "skipganomaly/plots.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "bitmap_font.hpp"
#include "skipganomaly/error.hpp"

namespace sga {
namespace {

constexpr Rgb black{0, 0, 0};
constexpr Rgb white{255, 255, 255};
constexpr Rgb dark_grey{80, 80, 80};
constexpr Rgb grey{170, 170, 170};
constexpr Rgb panel_grey{200, 200, 200};
constexpr Rgb light_grey{225, 225, 225};
constexpr Rgb blue{31, 119, 180};
constexpr Rgb red{214, 39, 40};

constexpr int cell_width = font::glyph_width + 1;
constexpr int cell_height = font::glyph_height + 1;

void check_rgb(const Image& image) {
    SGA_CHECK_ARGUMENT(image.channels == 3 && image.width > 0 && image.height > 0 &&
                           image.pixels.size() ==
                               static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height) * 3,
                       "text is drawn on a consistent RGB image; found " + std::to_string(image.width) + " x " +
                           std::to_string(image.height) + " x " + std::to_string(image.channels) + " with " +
                           std::to_string(image.pixels.size()) + " bytes");
}

// Text on one line from (x, y); vertical turns it a quarter counter-clockwise, so it reads
// from bottom to top with its first character's cell at (x, y + text_width - 6 scale).
void put_text(Image& image, int x, int y, std::string_view text, const Rgb& colour, int scale, bool vertical) {
    const int length = text_width(text, scale);
    for (std::size_t i = 0; i < text.size(); ++i) {
        const font::GlyphBits& bits = font::glyph(text[i]);
        for (int row = 0; row < font::glyph_height; ++row)
            for (int column = 0; column < font::glyph_width; ++column) {
                if (((bits[static_cast<std::size_t>(row)] >> (font::glyph_width - 1 - column)) & 1) == 0) continue;
                // The pixel's position along and across the line, in output pixels.
                const int along = static_cast<int>(i) * cell_width * scale + column * scale;
                const int across = row * scale;
                for (int a = 0; a < scale; ++a)
                    for (int b = 0; b < scale; ++b) {
                        const int px = vertical ? x + across + b : x + along + a;
                        const int py = vertical ? y + length - 1 - (along + a) : y + across + b;
                        if (px < 0 || py < 0 || px >= image.width || py >= image.height) continue;
                        std::uint8_t* p = image.pixels.data() +
                                          (static_cast<std::size_t>(py) * static_cast<std::size_t>(image.width) +
                                           static_cast<std::size_t>(px)) * 3;
                        p[0] = colour[0];
                        p[1] = colour[1];
                        p[2] = colour[2];
                    }
            }
    }
}

class Canvas {
public:
    Canvas(int width, int height) {
        image_.width = width;
        image_.height = height;
        image_.channels = 3;
        image_.pixels.assign(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3, 255);
    }

    int width() const { return image_.width; }
    int height() const { return image_.height; }

    // Blends colour over the pixel with the given opacity; points outside are ignored.
    void plot(int x, int y, const Rgb& colour, float opacity = 1.0f) {
        if (x < 0 || y < 0 || x >= image_.width || y >= image_.height) return;
        std::uint8_t* p = image_.pixels.data() +
                          (static_cast<std::size_t>(y) * static_cast<std::size_t>(image_.width) +
                           static_cast<std::size_t>(x)) * 3;
        for (int c = 0; c < 3; ++c)
            p[c] = static_cast<std::uint8_t>(std::lround(p[c] * (1.0f - opacity) + colour[static_cast<std::size_t>(c)] * opacity));
    }

    void fill(int x0, int y0, int x1, int y1, const Rgb& colour, float opacity = 1.0f) {
        for (int y = std::min(y0, y1); y <= std::max(y0, y1); ++y)
            for (int x = std::min(x0, x1); x <= std::max(x0, x1); ++x) plot(x, y, colour, opacity);
    }

    // A line of the given thickness in pixels; with dash > 0, drawn dash pixels on, dash off.
    void line(double x0, double y0, double x1, double y1, const Rgb& colour, int thickness = 1, int dash = 0) {
        const double length = std::max(std::fabs(x1 - x0), std::fabs(y1 - y0));
        const int steps = std::max(1, static_cast<int>(std::ceil(length)));
        const int low = -(thickness - 1) / 2;
        const int high = thickness / 2;
        for (int i = 0; i <= steps; ++i) {
            if (dash > 0 && (i / dash) % 2 == 1) continue;
            const double t = static_cast<double>(i) / steps;
            const int x = static_cast<int>(std::lround(x0 + (x1 - x0) * t));
            const int y = static_cast<int>(std::lround(y0 + (y1 - y0) * t));
            fill(x + low, y + low, x + high, y + high, colour);
        }
    }

    void text(int x, int y, std::string_view s, const Rgb& colour, int scale) {
        put_text(image_, x, y, s, colour, scale, false);
    }
    // Centred on x.
    void text_centred(int x, int y, std::string_view s, const Rgb& colour, int scale) {
        text(x - text_width(s, scale) / 2, y, s, colour, scale);
    }
    // Reading upwards, centred on y.
    void text_vertical_centred(int x, int y, std::string_view s, const Rgb& colour, int scale) {
        put_text(image_, x, y - text_width(s, scale) / 2, s, colour, scale, true);
    }

    // An image pasted with its top-left corner at (x, y); it must be RGB.
    void paste(const Image& picture, int x, int y) {
        for (int row = 0; row < picture.height; ++row)
            for (int column = 0; column < picture.width; ++column) {
                const std::uint8_t* p = picture.pixels.data() +
                                        (static_cast<std::size_t>(row) * static_cast<std::size_t>(picture.width) +
                                         static_cast<std::size_t>(column)) * 3;
                plot(x + column, y + row, Rgb{p[0], p[1], p[2]});
            }
    }

    Image take() { return std::move(image_); }

private:
    Image image_;
};

// Text scale for a picture whose shorter side is `side`; 0 when there is no room for text.
int text_scale_for(int side) {
    if (side < 128) return 0;
    return side >= 384 ? 2 : 1;
}

// The plot area and how the axes are labelled.
struct PlotArea {
    int left, top, right, bottom;
};

// Margins around the plot area for a title on top, tick labels of up to tick_characters
// characters and an axis label on the left and below; without text (scale 0), the old thin
// margins.
PlotArea plot_area(int width, int height, int scale, int tick_characters) {
    if (scale == 0) {
        const int margin = std::max(8, std::min(width, height) / 10);
        return {margin, margin / 2, width - 1 - margin / 2, height - 1 - margin};
    }
    const int pad = 4 * scale;
    const int line = cell_height * scale;
    const int tick = 4;
    const int left = pad + line + pad + tick_characters * cell_width * scale + tick + pad / 2;
    const int top = pad + line + pad;
    const int bottom = tick + 5 * scale + line + pad + line + pad;
    const int right = pad + 3 * cell_width * scale;  // half a tick label past the last tick
    return {left, top, width - 1 - right, height - 1 - bottom};
}

// Title, axis labels; the tick labels are drawn by the caller.
void label_axes(Canvas& canvas, const PlotArea& area, int scale, std::string_view title, std::string_view x_label,
                std::string_view y_label) {
    if (scale == 0) return;
    const int pad = 4 * scale;
    const int line = cell_height * scale;
    canvas.text_centred((area.left + area.right) / 2, pad, title, black, scale);
    canvas.text_centred((area.left + area.right) / 2, area.bottom + 4 + 5 * scale + line + pad, x_label, black, scale);
    canvas.text_vertical_centred(pad, (area.top + area.bottom) / 2, y_label, black, scale);
}

void tick_label_x(Canvas& canvas, const PlotArea& area, double x, std::string_view label, int scale) {
    if (scale == 0) return;
    // Below the half of the lowest y tick label that hangs under the x axis.
    canvas.text_centred(static_cast<int>(std::lround(x)), area.bottom + 4 + 5 * scale, label, black, scale);
}

void tick_label_y(Canvas& canvas, const PlotArea& area, double y, std::string_view label, int scale) {
    if (scale == 0) return;
    const int x = area.left - 4 - 2 * scale - text_width(label, scale);
    canvas.text(x, static_cast<int>(std::lround(y)) - (font::glyph_height - 1) * scale / 2, label, black, scale);
}

std::string format_fixed(double value, int decimals) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
    std::string s = buffer;
    if (s == "-0" || s.rfind("-0.", 0) == 0) {  // no "-0.00" for a tick at zero
        bool zero = true;
        for (char c : s) zero = zero && (c == '-' || c == '0' || c == '.');
        if (zero) s.erase(0, 1);
    }
    return s;
}

// Round tick values in [low, high]: steps of 1, 2 or 5 x 10^k, at most max_count of them.
// decimals receives the digits after the point that tell the ticks apart.
std::vector<double> nice_ticks(double low, double high, int max_count, int& decimals) {
    max_count = std::max(2, max_count);
    const double span = high - low;
    double step = std::pow(10.0, std::floor(std::log10(span / max_count)));
    for (double m : {1.0, 2.0, 5.0, 10.0}) {
        const double candidate = m * std::pow(10.0, std::floor(std::log10(span / max_count)));
        if (span / candidate <= max_count) {
            step = candidate;
            break;
        }
    }
    decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
    std::vector<double> ticks;
    for (double t = std::ceil(low / step - 1e-9) * step; t <= high + step * 1e-9; t += step) ticks.push_back(t);
    return ticks;
}

// ---- the evaluation strip ---------------------------------------------------------------

// An ImageView converted to an RGB Image.
Image to_rgb(const ImageView& view) {
    Image out;
    out.width = view.width;
    out.height = view.height;
    out.channels = 3;
    out.pixels.resize(static_cast<std::size_t>(view.width) * static_cast<std::size_t>(view.height) * 3);
    const int bytes = bytes_per_pixel(view.format);
    for (int y = 0; y < view.height; ++y) {
        const std::uint8_t* row = view.data + static_cast<std::ptrdiff_t>(y) * view.row_stride_bytes;
        for (int x = 0; x < view.width; ++x) {
            const std::uint8_t* p = row + static_cast<std::ptrdiff_t>(x) * bytes;
            std::uint8_t* o = out.pixels.data() +
                              (static_cast<std::size_t>(y) * static_cast<std::size_t>(view.width) +
                               static_cast<std::size_t>(x)) * 3;
            switch (view.format) {
                case PixelFormat::Gray: o[0] = o[1] = o[2] = p[0]; break;
                case PixelFormat::Rgb:
                case PixelFormat::Rgba: o[0] = p[0]; o[1] = p[1]; o[2] = p[2]; break;
                case PixelFormat::Bgr:
                case PixelFormat::Bgra: o[0] = p[2]; o[1] = p[1]; o[2] = p[0]; break;
            }
        }
    }
    return out;
}

// A binary plane (> 0 white, else black) as an RGB image.
Image binary_to_rgb(const std::uint8_t* plane, std::ptrdiff_t row_stride, int width, int height) {
    Image out;
    out.width = width;
    out.height = height;
    out.channels = 3;
    out.pixels.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x) {
            const std::uint8_t v = plane[static_cast<std::ptrdiff_t>(y) * row_stride + x] > 0 ? 255 : 0;
            std::uint8_t* o = out.pixels.data() +
                              (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) +
                               static_cast<std::size_t>(x)) * 3;
            o[0] = o[1] = o[2] = v;
        }
    return out;
}

// Resizes an RGB image to width x height: each output pixel covers a box of the source, whose
// pixels are averaged (or, with take_maximum, their largest value taken per channel); when
// enlarging the box holds one source pixel, so pixels are repeated.
Image resample(const Image& source, int width, int height, bool take_maximum) {
    Image out;
    out.width = width;
    out.height = height;
    out.channels = 3;
    out.pixels.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
    for (int y = 0; y < height; ++y) {
        const int y0 = static_cast<int>(static_cast<long long>(y) * source.height / height);
        const int y1 = std::max(y0 + 1, static_cast<int>(static_cast<long long>(y + 1) * source.height / height));
        for (int x = 0; x < width; ++x) {
            const int x0 = static_cast<int>(static_cast<long long>(x) * source.width / width);
            const int x1 = std::max(x0 + 1, static_cast<int>(static_cast<long long>(x + 1) * source.width / width));
            for (int c = 0; c < 3; ++c) {
                std::uint64_t sum = 0;
                std::uint8_t maximum = 0;
                for (int sy = y0; sy < y1; ++sy)
                    for (int sx = x0; sx < x1; ++sx) {
                        const std::uint8_t v =
                            source.pixels[(static_cast<std::size_t>(sy) * static_cast<std::size_t>(source.width) +
                                           static_cast<std::size_t>(sx)) * 3 + static_cast<std::size_t>(c)];
                        sum += v;
                        maximum = std::max(maximum, v);
                    }
                const std::uint64_t count = static_cast<std::uint64_t>(y1 - y0) * static_cast<std::uint64_t>(x1 - x0);
                out.pixels[(static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3 +
                           static_cast<std::size_t>(c)] =
                    take_maximum ? maximum : static_cast<std::uint8_t>((sum + count / 2) / count);
            }
        }
    }
    return out;
}

// "...tail" of text that fits in width pixels at scale.
std::string fit_text(const std::string& text, int width, int scale) {
    if (text_width(text, scale) <= width) return text;
    const int characters = std::max(0, width / (cell_width * scale) - 3);
    if (characters == 0) return "";
    return "..." + text.substr(text.size() - static_cast<std::size_t>(characters));
}

// text broken at spaces into lines that fit in width pixels at scale; a word longer than a
// line is shortened at its start.
std::vector<std::string> wrap_text(const std::string& text, int width, int scale) {
    std::vector<std::string> lines;
    std::string line;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find(' ', start);
        if (end == std::string::npos) end = text.size();
        const std::string word = text.substr(start, end - start);
        start = end + 1;
        if (word.empty()) {
            if (!line.empty()) line += ' ';  // keep runs of spaces inside a line
            continue;
        }
        const std::string joined = line.empty() ? word : line + " " + word;
        if (text_width(joined, scale) <= width) {
            line = joined;
            continue;
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        if (!line.empty()) lines.push_back(line);
        line = fit_text(word, width, scale);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    if (!line.empty()) lines.push_back(line);
    return lines;
}

}  // namespace

int text_width(std::string_view text, int scale) {
    SGA_CHECK_ARGUMENT(scale >= 1, "text scale must be at least 1, got " + std::to_string(scale));
    if (text.empty()) return 0;
    // The last character's spacing column is not part of the text.
    return (static_cast<int>(text.size()) * cell_width - 1) * scale;
}

int text_height(int scale) {
    SGA_CHECK_ARGUMENT(scale >= 1, "text scale must be at least 1, got " + std::to_string(scale));
    return font::glyph_height * scale;
}

void draw_text(Image& image, int x, int y, std::string_view text, const Rgb& colour, int scale) {
    SGA_CHECK_ARGUMENT(scale >= 1, "text scale must be at least 1, got " + std::to_string(scale));
    check_rgb(image);
    put_text(image, x, y, text, colour, scale, false);
}

Image plot_roc_curve(const RocCurve& curve, int size, std::string_view title) {
    SGA_CHECK_ARGUMENT(size >= 32, "plot size must be at least 32, got " + std::to_string(size));
    SGA_CHECK_ARGUMENT(!curve.fpr.empty() && curve.fpr.size() == curve.tpr.size(),
                       "ROC curve needs matching, non-empty fpr and tpr");
    for (std::size_t i = 0; i < curve.fpr.size(); ++i)
        SGA_CHECK_ARGUMENT(curve.fpr[i] >= 0.0 && curve.fpr[i] <= 1.0 && curve.tpr[i] >= 0.0 &&
                               curve.tpr[i] <= 1.0,
                           "ROC point " + std::to_string(i) + " lies outside [0, 1]");
    const int scale = text_scale_for(size);
    Canvas canvas(size, size);
    const PlotArea area = plot_area(size, size, scale, 3);
    const double w = area.right - area.left;
    const double h = area.bottom - area.top;
    for (int q = 0; q <= 5; ++q) {
        const double x = area.left + w * q / 5.0;
        const double y = area.bottom - h * q / 5.0;
        if (q > 0) {
            canvas.line(x, area.top, x, area.bottom, light_grey);
            canvas.line(area.left, y, area.right, y, light_grey);
        }
        canvas.line(x, area.bottom, x, area.bottom + 4, black);
        canvas.line(area.left - 4, y, area.left, y, black);
        const std::string label = format_fixed(q / 5.0, 1);
        tick_label_x(canvas, area, x, label, scale);
        tick_label_y(canvas, area, y, label, scale);
    }
    canvas.line(area.left, area.top, area.left, area.bottom, black);
    canvas.line(area.left, area.bottom, area.right, area.bottom, black);
    canvas.line(area.left, area.bottom, area.right, area.top, grey, 1, 3);
    const int thickness = std::max(2, size / 200);
    double auc = 0.0;
    for (std::size_t i = 0; i < curve.fpr.size(); ++i) {
        const std::size_t previous = i == 0 ? 0 : i - 1;
        auc += 0.5 * (curve.tpr[i] + curve.tpr[previous]) * (curve.fpr[i] - curve.fpr[previous]);
        canvas.line(area.left + curve.fpr[previous] * w, area.bottom - curve.tpr[previous] * h,
                    area.left + curve.fpr[i] * w, area.bottom - curve.tpr[i] * h, blue, thickness);
    }
    label_axes(canvas, area, scale, title.empty() ? std::string_view("ROC curve") : title, "false-positive rate",
               "true-positive rate");
    if (scale > 0) {
        // The legend in the lower right, on white so grid and curve do not cross the text.
        const int pad = 4 * scale;
        const int line = cell_height * scale;
        const std::string auc_text = "AUROC = " + format_fixed(auc, 4);
        const std::string chance_text = "chance = 0.5";
        const int sample = 6 * cell_width * scale / 2;
        const int box_width = pad + sample + pad + std::max(text_width(auc_text, scale), text_width(chance_text, scale)) + pad;
        const int box_height = pad + 2 * line + pad;
        const int x0 = area.right - pad - box_width, y0 = area.bottom - pad - box_height;
        canvas.fill(x0, y0, x0 + box_width, y0 + box_height, white);
        canvas.line(x0, y0, x0 + box_width, y0, grey);
        canvas.line(x0, y0 + box_height, x0 + box_width, y0 + box_height, grey);
        canvas.line(x0, y0, x0, y0 + box_height, grey);
        canvas.line(x0 + box_width, y0, x0 + box_width, y0 + box_height, grey);
        const int text_x = x0 + pad + sample + pad;
        const int middle = (font::glyph_height - 2) * scale / 2;
        canvas.line(x0 + pad, y0 + pad + middle, x0 + pad + sample, y0 + pad + middle, blue, thickness);
        canvas.text(text_x, y0 + pad, auc_text, black, scale);
        canvas.line(x0 + pad, y0 + pad + line + middle, x0 + pad + sample, y0 + pad + line + middle, grey, 1, 3);
        canvas.text(text_x, y0 + pad + line, chance_text, dark_grey, scale);
    }
    return canvas.take();
}

Image plot_score_histogram(std::span<const float> normal_scores, std::span<const float> anomalous_scores, int width,
                           int height, std::string_view title) {
    SGA_CHECK_ARGUMENT(width >= 32 && height >= 32,
                       "plot size must be at least 32 x 32, got " + std::to_string(width) + " x " +
                           std::to_string(height));
    SGA_CHECK_ARGUMENT(!normal_scores.empty() || !anomalous_scores.empty(), "histogram needs at least one score");
    float low = std::numeric_limits<float>::infinity();
    float high = -std::numeric_limits<float>::infinity();
    for (std::span<const float> set : {normal_scores, anomalous_scores}) {
        for (float s : set) {
            SGA_CHECK_ARGUMENT(std::isfinite(s), "histogram scores must be finite");
            low = std::min(low, s);
            high = std::max(high, s);
        }
    }
    double range_low = low, range_high = high;
    if (range_high <= range_low) {  // one distinct value: centre it
        range_low -= 0.5;
        range_high += 0.5;
    }

    const int scale = text_scale_for(std::min(width, height));
    Canvas canvas(width, height);
    // The left margin fits the count labels, which stay below twice the number of scores.
    const std::size_t scores = normal_scores.size() + anomalous_scores.size();
    const PlotArea area = plot_area(width, height, scale, static_cast<int>(std::to_string(2 * scores).size()));
    const int plot_width = area.right - area.left;
    const int bins = std::clamp(plot_width / 4, 1, 50);
    auto count = [&](std::span<const float> set) {
        std::vector<std::size_t> counts(static_cast<std::size_t>(bins), 0);
        for (float s : set) {
            const int bin = static_cast<int>((s - range_low) / (range_high - range_low) * bins);
            ++counts[static_cast<std::size_t>(std::clamp(bin, 0, bins - 1))];
        }
        return counts;
    };
    const std::vector<std::size_t> normal = count(normal_scores);
    const std::vector<std::size_t> anomalous = count(anomalous_scores);
    const std::size_t fullest = std::max(*std::max_element(normal.begin(), normal.end()),
                                         *std::max_element(anomalous.begin(), anomalous.end()));
    // With text, the top quarter of the plot is left to the legend.
    const double count_top = scale > 0 ? 1.3 * static_cast<double>(fullest) : static_cast<double>(fullest);
    const double plot_height = area.bottom - 1 - area.top;
    const auto y_of = [&](double c) { return area.bottom - 1 - plot_height * c / count_top; };

    if (scale > 0) {
        const int line = cell_height * scale;
        int decimals = 0;
        for (double c : nice_ticks(0.0, count_top, std::max(2, static_cast<int>(plot_height) / (2 * line)), decimals)) {
            if (c != std::floor(c)) continue;  // whole images only
            const double y = y_of(c);
            canvas.line(area.left - 4, y, area.left, y, black);
            if (c > 0) canvas.line(area.left + 1, y, area.right, y, light_grey);
            tick_label_y(canvas, area, y, format_fixed(c, 0), scale);
        }
        // As many score ticks as fit side by side with a gap of two characters.
        for (int wanted = 8; wanted >= 2; --wanted) {
            const std::vector<double> ticks = nice_ticks(range_low, range_high, wanted, decimals);
            int widest = 0;
            for (double t : ticks) widest = std::max(widest, text_width(format_fixed(t, decimals), scale));
            const int room = plot_width / std::max<int>(1, static_cast<int>(ticks.size()));
            if (widest + 2 * cell_width * scale > room && wanted > 2) continue;
            for (double t : ticks) {
                const double x = area.left + plot_width * (t - range_low) / (range_high - range_low);
                canvas.line(x, area.bottom, x, area.bottom + 4, black);
                tick_label_x(canvas, area, x, format_fixed(t, decimals), scale);
            }
            break;
        }
    } else {
        for (int q = 1; q <= 4; ++q) {
            const double x = area.left + plot_width * q / 4.0;
            const double y = area.bottom - (area.bottom - area.top) * q / 4.0;
            canvas.line(x, area.bottom, x, area.bottom + 4, black);
            canvas.line(area.left - 4, y, area.left, y, black);
        }
    }

    for (const auto& [counts, colour] : {std::pair{&normal, blue}, std::pair{&anomalous, red}}) {
        for (int b = 0; b < bins; ++b) {
            const std::size_t n = (*counts)[static_cast<std::size_t>(b)];
            if (n == 0) continue;
            const int x0 = area.left + 1 + plot_width * b / bins;
            const int x1 = area.left + plot_width * (b + 1) / bins - 1;
            const int top = static_cast<int>(std::lround(y_of(static_cast<double>(n))));
            canvas.fill(x0, top, std::max(x0, x1), area.bottom - 1, colour, 0.55f);
        }
    }
    canvas.line(area.left, area.top, area.left, area.bottom, black);
    canvas.line(area.left, area.bottom, area.right, area.bottom, black);
    label_axes(canvas, area, scale, title.empty() ? std::string_view("score histogram") : title, "score", "images");
    if (scale > 0) {
        const int pad = 4 * scale;
        const int line = cell_height * scale;
        const std::string entries[2] = {"normal (" + std::to_string(normal_scores.size()) + ")",
                                        "anomalous (" + std::to_string(anomalous_scores.size()) + ")"};
        const int swatch = font::glyph_height * scale;
        const int text_right = area.right - pad;
        const int widest = std::max(text_width(entries[0], scale), text_width(entries[1], scale));
        for (int k = 0; k < 2; ++k) {
            const int y = area.top + pad + k * (line + pad / 2);
            const int x = text_right - widest;
            canvas.fill(x - pad - swatch, y, x - pad, y + swatch - 1, k == 0 ? blue : red, 0.55f);
            canvas.text(x, y, entries[k], black, scale);
        }
    }
    return canvas.take();
}

Image plot_anomaly_case(const AnomalyCase& c, int panel_size) {
    SGA_CHECK_ARGUMENT(panel_size >= 32, "panel size must be at least 32, got " + std::to_string(panel_size));
    const ImageView& image = c.image;
    SGA_CHECK_ARGUMENT(image.data != nullptr && image.width > 0 && image.height > 0 &&
                           image.row_stride_bytes >= static_cast<std::ptrdiff_t>(image.width) * bytes_per_pixel(image.format),
                       "the case's image view is empty or its stride is shorter than a row");
    const Image original = to_rgb(image);
    const std::size_t pixels = static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height);
    const auto size_text = [&] { return std::to_string(image.height) + " x " + std::to_string(image.width); };
    SGA_CHECK_ARGUMENT(c.anomaly_map.empty() || c.anomaly_map.size() == pixels,
                       "anomaly map: expected " + std::to_string(pixels) + " values (" + size_text() + "), found " +
                           std::to_string(c.anomaly_map.size()));
    SGA_CHECK_ARGUMENT(c.predicted_mask.empty() || c.predicted_mask.size() == pixels,
                       "predicted mask: expected " + std::to_string(pixels) + " values (" + size_text() + "), found " +
                           std::to_string(c.predicted_mask.size()));
    if (c.ground_truth) {
        const ImageView& truth = *c.ground_truth;
        SGA_CHECK_ARGUMENT(truth.data != nullptr && truth.format == PixelFormat::Gray && truth.width == image.width &&
                               truth.height == image.height && truth.row_stride_bytes >= truth.width,
                           "ground truth: expected one channel at " + size_text() + ", found " +
                               std::to_string(truth.height) + " x " + std::to_string(truth.width) + " with " +
                               std::to_string(bytes_per_pixel(truth.format)) + " channel(s)");
    }

    const int panel_width = image.width >= image.height
                                ? panel_size
                                : std::max(1, static_cast<int>(std::lround(static_cast<double>(panel_size) * image.width / image.height)));
    const int panel_height = image.height >= image.width
                                 ? panel_size
                                 : std::max(1, static_cast<int>(std::lround(static_cast<double>(panel_size) * image.height / image.width)));
    const int pad = 6;
    const int width = 4 * panel_width + 5 * pad;
    const int scale = width >= 800 ? 2 : 1;
    const int line = (cell_height + 2) * scale;
    const std::vector<std::string> caption = wrap_text(c.caption, width - 2 * pad, scale);
    const std::vector<std::string> detail = wrap_text(c.detail, width - 2 * pad, scale);
    const int text_lines = std::max<int>(1, static_cast<int>(caption.size() + detail.size()));
    const int panels_top = pad + text_lines * line + pad + line + 2;
    const int height = panels_top + panel_height + pad;
    Canvas canvas(width, height);
    int y = pad;
    for (const std::string& l : caption) {
        canvas.text(pad, y, l, black, scale);
        y += line;
    }
    for (const std::string& l : detail) {
        canvas.text(pad, y, l, dark_grey, scale);
        y += line;
    }

    const auto shrink = [&](const Image& picture, bool take_maximum) {
        return resample(picture, panel_width, panel_height, take_maximum && (picture.width > panel_width || picture.height > panel_height));
    };
    const char* const titles[4] = {"image", "ground truth", "anomaly map", "predicted mask"};
    for (int k = 0; k < 4; ++k) {
        const int x = pad + k * (panel_width + pad);
        const int title_scale = text_width(titles[k], scale) <= panel_width ? scale : 1;
        canvas.text_centred(x + panel_width / 2, panels_top - 2 - line + (scale - title_scale) * cell_height / 2, titles[k],
                            black, title_scale);
        std::optional<Image> panel;
        const char* missing = "";
        switch (k) {
            case 0: panel = shrink(original, false); break;
            case 1:
                if (c.ground_truth)
                    panel = shrink(binary_to_rgb(c.ground_truth->data, c.ground_truth->row_stride_bytes, image.width, image.height),
                                   true);
                else missing = "not known";
                break;
            case 2:
                if (!c.anomaly_map.empty()) {
                    SGA_CHECK_ARGUMENT(std::isfinite(c.map_low) && std::isfinite(c.map_high) && c.map_high > c.map_low,
                                       "the map's colour scale must be finite with map_high > map_low, got [" +
                                           std::to_string(c.map_low) + ", " + std::to_string(c.map_high) + "]");
                    const std::vector<float> map(c.anomaly_map.begin(), c.anomaly_map.end());
                    panel = shrink(anomaly_overlay(image, map, c.map_low, c.map_high), false);
                } else {
                    missing = "no map";
                }
                break;
            default:
                if (!c.predicted_mask.empty())
                    panel = shrink(binary_to_rgb(c.predicted_mask.data(), image.width, image.width, image.height), true);
                else missing = "no threshold";
                break;
        }
        if (panel) {
            canvas.paste(*panel, x, panels_top);
        } else {
            canvas.fill(x, panels_top, x + panel_width - 1, panels_top + panel_height - 1, panel_grey);
            const int missing_scale = text_width(missing, scale) <= panel_width - 4 ? scale : 1;
            canvas.text_centred(x + panel_width / 2, panels_top + panel_height / 2 - line / 2, missing, dark_grey,
                                missing_scale);
        }
    }
    return canvas.take();
}

}  // namespace sga
