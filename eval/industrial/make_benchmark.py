#!/usr/bin/python3
"""Build a semi-synthetic industrial-inspection benchmark in the MVTec AD layout.

Normal images are crops of real photographs shipped in Debian packages (GIMP's pattern
tiles, scikit-image's sample photographs, MyPaint's scanned paper backgrounds), a coin cut
from scikit-image's coins photograph, and one procedurally generated texture in the manner of
DAGM 2007. Defects are drawn on them with exact masks:

    ROOT/<category>/train/good/000.png
    ROOT/<category>/test/good/000.png
    ROOT/<category>/test/<defect>/000.png
    ROOT/<category>/ground_truth/<defect>/000_mask.png   (0 or 255, one channel, image size)

Everything follows from --seed: every image has its own numpy Generator, seeded from
(seed, category, split, defect, index), so a category's images do not depend on which other
categories are built. Only numpy, PIL and scipy.ndimage are used.

    /usr/bin/python3 eval/industrial/make_benchmark.py --out data/industrial
    /usr/bin/python3 eval/industrial/make_benchmark.py --check data/industrial
"""

import argparse
import os
import struct
import sys
import time
import zlib

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

GIMP_PATTERNS = "/usr/share/gimp/2.0/patterns"
SKIMAGE_DATA = "/usr/lib/python3/dist-packages/skimage/data"
MYPAINT_BACKGROUNDS = "/usr/share/mypaint/backgrounds"

# Images per category at the default settings.
TRAIN_GOOD = 200
TEST_GOOD = 40
PER_DEFECT = 16

# A defect is kept only if, in the written 8-bit image, the mean absolute change inside its
# mask is at least this many grey levels (averaged over channels) and nothing changed outside.
MIN_MEAN_CHANGE = 6.0
# Mask area, as a fraction of the image, of each size class (blob-like defects). Strokes use
# length and width classes instead (see draw_stroke).
SIZE_CLASSES = ("tiny", "medium", "large")
AREA_RANGE = {"tiny": (0.008, 0.02), "medium": (0.02, 0.06), "large": (0.06, 0.15)}


# ---------------------------------------------------------------------------------------------
# Sources: real photographs from Debian packages.
# ---------------------------------------------------------------------------------------------

class Source:
    """One photograph. `seamless` tiles (GIMP patterns) wrap around; others are cropped inside."""

    def __init__(self, package, path, seamless, description):
        self.package = package
        self.path = path
        self.seamless = seamless
        self.description = description
        self._pixels = None

    def pixels(self):
        """(H, W, 3) float32 in [0, 1] and whether the photograph has colour."""
        if self._pixels is None:
            if self.path.endswith(".pat"):
                rgb = read_gimp_pattern(self.path)
            else:
                with Image.open(self.path) as image:
                    rgb = np.asarray(image.convert("RGB"))
            rgb = rgb.astype(np.float32) / 255.0
            coloured = bool(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max() > 2.0 / 255.0)
            self._pixels = (rgb, coloured)
        return self._pixels


def read_gimp_pattern(path):
    """Parse GIMP's .pat: big-endian u32 header_size, version, width, height, bytes per pixel,
    the magic 'GPAT', a NUL-terminated name up to header_size, then height x width x bpp bytes.
    Returns (height, width, 3) uint8 (grey and grey+alpha are expanded, alpha is dropped)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError(f"{path}: expected a GIMP pattern of at least 24 bytes, found {len(data)}")
    header_size, version, width, height, bpp = struct.unpack(">5I", data[:20])
    if data[20:24] != b"GPAT" or version != 1 or bpp not in (1, 2, 3, 4):
        raise ValueError(f"{path}: expected GIMP pattern version 1 with magic GPAT and 1..4 bytes "
                         f"per pixel, found version {version}, magic {data[20:24]!r}, bpp {bpp}")
    needed = header_size + width * height * bpp
    if len(data) < needed:
        raise ValueError(f"{path}: expected {needed} bytes for {width}x{height}x{bpp}, "
                         f"found {len(data)}")
    pixels = np.frombuffer(data, np.uint8, width * height * bpp, header_size)
    pixels = pixels.reshape(height, width, bpp)
    if bpp <= 2:
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def gimp(name, description):
    return Source("gimp-data", f"{GIMP_PATTERNS}/{name}.pat", True, description)


def skimage_photo(name, description):
    return Source("python3-skimage", f"{SKIMAGE_DATA}/{name}.png", False, description)


def mypaint(name, description):
    # Not quite seamless at the wrap (edge differences three times the neighbours'): cropped
    # inside, like a photograph.
    return Source("mypaint-data-extras", f"{MYPAINT_BACKGROUNDS}/{name}.png", False, description)


SOURCES = {
    "wood5": gimp("Wood/wood5", "GIMP pattern Wood/wood5 (light wood, horizontal grain)"),
    "burlap": gimp("Fabric/burlap", "GIMP pattern Fabric/burlap (woven jute)"),
    "granite1": gimp("Stone/granite1", "GIMP pattern Stone/granite1 (dark granite)"),
    "pink_marble": gimp("Stone/pink_marble", "GIMP pattern Stone/pink_marble"),
    "walnut": gimp("Wood/walnut", "GIMP pattern Wood/walnut (walnut burl)"),
    "bark": gimp("Wood/bark", "GIMP pattern Wood/bark"),
    "rock": gimp("Stone/rock", "GIMP pattern Stone/rock"),
    "slate": gimp("Stone/slate", "GIMP pattern Stone/slate"),
    "leather": gimp("Animal/leather", "GIMP pattern Animal/leather"),
    "burlwood": gimp("Wood/burlwood", "GIMP pattern Wood/burlwood"),
    "ground1": gimp("Stone/ground1", "GIMP pattern Stone/ground1 (dried mud)"),
    "crinklepaper": gimp("Paper/crinklepaper", "GIMP pattern Paper/crinklepaper"),
    "brick": skimage_photo("brick", "scikit-image data/brick.png (brick wall photograph)"),
    "gravel": skimage_photo("gravel", "scikit-image data/gravel.png (gravel photograph)"),
    "grass": skimage_photo("grass", "scikit-image data/grass.png (grass photograph)"),
    "coins": skimage_photo("coins", "scikit-image data/coins.png (Greek coins photograph)"),
    "cork": mypaint("ramon/HR_Cork", "MyPaint background ramon/HR_Cork.png (scanned cork)"),
    "canvas": mypaint("ramon/HR_Canvas 01", "MyPaint background ramon/HR_Canvas 01.png"),
}

# Transforms of whole crops that keep a texture's look: oriented textures keep their direction.
DIHEDRAL = {
    "d4": [(k, f) for k in range(4) for f in (False, True)],   # any turn and flip
    "flips": [(0, False), (0, True), (2, False), (2, True)],    # mirror, 180 degrees
    "rot180": [(0, False), (2, False)],
    "mirror": [(0, False), (0, True)],
}


def apply_dihedral(image, transform):
    turns, mirror = transform
    out = np.rot90(image, turns, axes=(0, 1))
    if mirror:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def sample_crop(rng, source, size, field_of_view, channels, scale_range=(0.8, 1.25)):
    """A size x size view of `source` covering field_of_view x scale source pixels at a random
    offset, resampled with cubic splines (wrapping for seamless tiles). (size, size, channels)."""
    rgb, _ = source.pixels()
    image = rgb if channels == 3 else luma(rgb)
    height, width = image.shape[:2]
    scale = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    extent = field_of_view * scale
    step = extent / size
    if source.seamless:
        top, left = rng.uniform(0, height), rng.uniform(0, width)
        region = image
        mode = "grid-wrap"
    else:
        if extent > min(height, width) - 2:
            raise ValueError(f"{source.path}: a view of {extent:.0f} px does not fit in "
                             f"{width}x{height}")
        top = rng.uniform(0, height - extent)
        left = rng.uniform(0, width - extent)
        # Resample only the part in view (plus a border for the spline).
        y0, x0 = max(int(top) - 4, 0), max(int(left) - 4, 0)
        y1, x1 = min(int(top + extent) + 5, height), min(int(left + extent) + 5, width)
        region = image[y0:y1, x0:x1]
        top, left = top - y0, left - x0
        mode = "nearest"
    if step > 1.0:  # anti-alias before shrinking
        sigma = 0.5 * np.sqrt(step * step - 1.0)
        region = ndi.gaussian_filter(region, (sigma, sigma, 0),
                                     mode="wrap" if source.seamless else "nearest")
    coords = top + (np.arange(size) + 0.5) * step - 0.5
    ys, xs = np.meshgrid(coords, left + (np.arange(size) + 0.5) * step - 0.5, indexing="ij")
    out = np.empty((size, size, region.shape[2]), np.float32)
    for c in range(region.shape[2]):
        out[:, :, c] = ndi.map_coordinates(region[:, :, c], [ys, xs], order=3, mode=mode)
    return np.clip(out, 0.0, 1.0)


def luma(rgb):
    """ITU-R 601 luma, as PIL's convert('L'). (H, W, 3) -> (H, W, 1)."""
    return (rgb @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]


# ---------------------------------------------------------------------------------------------
# Shapes: blobs, ellipses and strokes with soft edges.
# ---------------------------------------------------------------------------------------------

def smooth_noise(rng, shape, sigma):
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def soft_above(weight, threshold):
    """Blend weight that is exactly zero where weight <= threshold and rises to 1: the changed
    pixels are then exactly those with weight > threshold, which is the mask."""
    return np.clip((weight - threshold) / (1.0 - threshold), 0.0, 1.0)


def ellipse_radius(shape, centre, axes, angle):
    """Normalised elliptical radius: 1 on the ellipse with semi-axes `axes` turned by `angle`."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    dy, dx = ys - centre[0], xs - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2)


def random_blob(rng, size, area, roughness=0.3, max_aspect=2.0, centre=None, within=None):
    """A connected irregular region of about `area` pixels: an ellipse whose boundary is pushed
    around by smooth noise. Returns a bool (size, size) array, or None when it came out empty."""
    aspect = rng.uniform(1.0, max_aspect)
    major = np.sqrt(area * aspect / np.pi)
    minor = area / (np.pi * major)
    angle = rng.uniform(0, np.pi)
    if centre is None:
        margin = min(major + 2.0, size / 2.0)
        centre = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    radius = ellipse_radius((size, size), centre, (major, minor), angle)
    noise = smooth_noise(rng, (size, size), max(1.5, 0.35 * minor))
    blob = radius + roughness * noise < 1.0
    if within is not None:
        blob &= within
    labels, count = ndi.label(blob)
    if count == 0:
        return None
    if count > 1:  # keep the piece that holds most of the area
        sizes = ndi.sum(blob, labels, index=np.arange(1, count + 1))
        blob = labels == 1 + int(np.argmax(sizes))
    return ndi.binary_fill_holes(blob)


def draw_stroke(rng, size, size_class, style, within=None):
    """Coverage in [0, 1] of a thin antialiased stroke (drawn at 4x and box-filtered).

    style 'scratch': a smooth cubic Bezier, tapered at both ends.
    style 'crack': a jagged random walk with up to two thinner branches.
    """
    k = size / 128.0
    length = {"tiny": (0.12, 0.25), "medium": (0.25, 0.5), "large": (0.5, 0.9)}[size_class]
    width = {"tiny": (1.0, 2.0), "medium": (1.5, 3.0), "large": (2.0, 4.0)}[size_class]
    length = rng.uniform(*length) * size
    width = rng.uniform(*width) * k
    ss = 4
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)

    def polyline(points, widths):
        for (p, q), w in zip(zip(points[:-1], points[1:]), widths):
            w = max(1.0, w * ss)
            draw.line([tuple(p * ss), tuple(q * ss)], fill=255, width=int(round(w)))
            r = w / 2.0
            draw.ellipse([q[0] * ss - r, q[1] * ss - r, q[0] * ss + r, q[1] * ss + r], fill=255)

    if style == "scratch":
        for _ in range(100):
            start = rng.uniform(0.1 * size, 0.9 * size, 2)
            heading = rng.uniform(0, 2 * np.pi)
            end = start + length * np.array([np.cos(heading), np.sin(heading)])
            if np.all(end > 2) and np.all(end < size - 2):
                break
        normal = np.array([-np.sin(heading), np.cos(heading)])
        c1 = start + (end - start) / 3 + normal * rng.uniform(-0.3, 0.3) * length
        c2 = start + 2 * (end - start) / 3 + normal * rng.uniform(-0.3, 0.3) * length
        t = np.linspace(0.0, 1.0, max(8, int(length * 1.5)))[:, None]
        points = ((1 - t) ** 3 * start + 3 * (1 - t) ** 2 * t * c1 + 3 * (1 - t) * t * t * c2
                  + t ** 3 * end)
        mid = 0.5 * (t[1:, 0] + t[:-1, 0])
        polyline(points, width * np.maximum(np.sin(np.pi * mid) ** 0.5, 0.35))
    else:
        def walk(start, heading, walk_length, walk_width):
            steps = max(4, int(walk_length / (1.5 * k)))
            points = [np.asarray(start, np.float64)]
            direction = heading
            for _ in range(steps):
                direction += rng.normal(0.0, 0.45) + 0.3 * (heading - direction)
                points.append(points[-1] + 1.5 * k * np.array([np.cos(direction),
                                                               np.sin(direction)]))
            points = np.array(points)
            taper = np.linspace(1.0, 0.4, steps) * rng.uniform(0.7, 1.0, steps)
            polyline(points, walk_width * taper)
            return points

        start = rng.uniform(0.15 * size, 0.85 * size, 2)
        heading = rng.uniform(0, 2 * np.pi)
        half = 0.5 * length
        trunk = np.concatenate([walk(start, heading, half, width)[::-1],
                                walk(start, heading + np.pi, half, width)])
        for _ in range(rng.integers(0, 3)):
            at = trunk[rng.integers(len(trunk))]
            walk(at, heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2),
                 rng.uniform(0.2, 0.45) * length, 0.6 * width)
    coverage = np.asarray(canvas.reduce(ss), np.float32) / 255.0
    if within is not None:
        coverage = coverage * within
    return coverage


def area_ok(mask, size_class):
    """Blob-like masks must land roughly in their size class."""
    low, high = AREA_RANGE[size_class]
    fraction = mask.mean()
    return 0.6 * low <= fraction <= min(1.2 * high, 0.16)


# ---------------------------------------------------------------------------------------------
# Defects. Each takes the clean image (H, W, C) in [0, 1] and returns (new image, mask) or None
# to ask for another draw. The caller keeps the original outside the mask.
# ---------------------------------------------------------------------------------------------

def local_mean(image, sigma):
    return ndi.gaussian_filter(image, (sigma, sigma, 0), mode="reflect")


def defect_stroke(rng, image, size_class, context, style):
    """scratch: lighter or darker than the surface; crack: darker (lighter, as if dusty, on
    some dark surfaces). The mask is where the stroke covers at least 20% of a pixel."""
    size = image.shape[0]
    coverage = draw_stroke(rng, size, size_class, style, context.get("surface"))
    mask = coverage >= 0.2
    alpha = np.where(mask, coverage, 0.0)[:, :, None]
    mean = local_mean(image, 3.0 * size / 128.0)
    level = float(mean[mask].mean()) if mask.any() else 0.5
    if style == "crack":
        # Filled with shadow (darker than the surface around it), or on dark surfaces often
        # with dust (lighter); the surface's own texture is gone either way.
        if level > 0.3 or rng.random() < 0.4:
            target = mean * (1.0 - rng.uniform(0.5, 0.85))
        else:
            target = mean + rng.uniform(0.15, 0.3)
    else:
        # Exposed material, lighter or darker; mostly towards the side with more room.
        sign = 1.0 if rng.random() < np.clip(1.4 - 1.3 * level, 0.2, 0.85) else -1.0
        target = np.clip(mean + sign * rng.uniform(0.12, 0.3), 0.02, 0.98)
    new = image * (1.0 - alpha) + target * alpha
    return new, mask


def defect_stain(rng, image, size_class, context):
    """A soft discoloured blob: shifted intensity (tinted in colour), changed contrast and
    sometimes a darker tide line at its rim."""
    size = image.shape[0]
    area = rng.uniform(*AREA_RANGE[size_class]) * size * size
    blob = random_blob(rng, size, area, roughness=0.45, max_aspect=2.2,
                       within=context.get("surface_core"))
    if blob is None:
        return None
    weight = ndi.gaussian_filter(blob.astype(np.float32), rng.uniform(1.0, 3.0) * size / 128)
    alpha = soft_above(weight, 0.3)
    mask = alpha > 0
    channels = image.shape[2]
    mean = local_mean(image, 4.0 * size / 128.0)
    level = float(image[blob].mean())
    darker = rng.random() < np.clip(1.5 * level, 0.2, 0.8)
    shift = (-1.0 if darker else 1.0) * rng.uniform(0.09, 0.22)
    tint = 1.0 + (0.35 * rng.uniform(-1, 1, channels) if channels == 3 else 0.0)
    variation = 1.0 + 0.35 * smooth_noise(rng, (size, size), 4.0 * size / 128)[:, :, None]
    contrast = rng.uniform(0.55, 1.15)
    new = image + alpha[:, :, None] * ((contrast - 1.0) * (image - mean)
                                       + shift * tint * variation)
    if rng.random() < 0.5:
        tide = 4.0 * alpha * (1.0 - alpha)
        new = new - rng.uniform(0.03, 0.08) * tide[:, :, None]
    return np.clip(new, 0, 1), mask


def defect_hole(rng, image, size_class, context):
    """A dark irregular opening, shaded like a pit lit from one side, with a slightly raised
    (lighter) rim."""
    size = image.shape[0]
    area = rng.uniform(*AREA_RANGE[size_class]) * size * size * 0.8
    blob = random_blob(rng, size, area, roughness=0.3, max_aspect=1.8)
    if blob is None:
        return None
    edge = 0.6 * size / 128
    hole = soft_above(ndi.gaussian_filter(blob.astype(np.float32), edge), 0.3)
    rim_width = max(1, int(round(rng.uniform(1.0, 2.5) * size / 128)))
    ring = ndi.binary_dilation(blob, iterations=rim_width) & ~blob
    rim = soft_above(ndi.gaussian_filter(ring.astype(np.float32), edge), 0.25) * (1.0 - hole)
    mean = local_mean(image, 3.0 * size / 128.0)
    centre = np.array(ndi.center_of_mass(blob))
    ys, xs = np.mgrid[0:size, 0:size]
    light = rng.uniform(0, 2 * np.pi)
    reach = np.sqrt(blob.sum() / np.pi) + 1e-6
    side = ((ys - centre[0]) * np.sin(light) + (xs - centre[1]) * np.cos(light)) / reach
    darkness = rng.uniform(0.12, 0.35) * (1.0 + 0.5 * np.clip(side, -1, 1))[:, :, None]
    # What shows through: dark, uneven, with a little of the surface's own texture.
    through = 1.0 + 0.25 * smooth_noise(rng, (size, size), 2.0 * size / 128)[:, :, None]
    inside = mean * darkness * through + 0.25 * (image - mean)
    new = image * (1.0 - hole[:, :, None]) + inside * hole[:, :, None]
    new = new + rim[:, :, None] * rng.uniform(0.05, 0.14)
    mask = (hole > 0) | (rim > 0)
    return np.clip(new, 0, 1), mask


def defect_foreign(rng, image, size_class, context):
    """A patch of another material in an irregular shape, its brightness partly matched."""
    size = image.shape[0]
    area = rng.uniform(*AREA_RANGE[size_class]) * size * size
    blob = random_blob(rng, size, area, roughness=0.35, max_aspect=3.0,
                       within=context.get("surface_core"))
    if blob is None:
        return None
    source = SOURCES[context["foreign"][rng.integers(len(context["foreign"]))]]
    patch = sample_crop(rng, source, size, rng.uniform(0.5, 1.2) * size, image.shape[2],
                        scale_range=(1.0, 1.0))
    patch = apply_dihedral(patch, DIHEDRAL["d4"][rng.integers(8)])
    match = rng.uniform(0.0, 0.6)
    patch_mean = patch.mean(axis=(0, 1))
    host_mean = image[blob].mean(axis=0)
    patch = patch - patch_mean + (1 - match) * patch_mean + match * host_mean
    alpha = soft_above(ndi.gaussian_filter(blob.astype(np.float32), 0.7 * size / 128), 0.3)
    new = image * (1 - alpha[:, :, None]) + np.clip(patch, 0, 1) * alpha[:, :, None]
    return new, alpha > 0


def defect_fold(rng, image, size_class, context):
    """A local fold: a smooth displacement across a short line, with the shading of the ridge
    it raises. The mask is where the displacement exceeds one pixel."""
    size = image.shape[0]
    k = size / 128.0
    length = {"tiny": (12, 28), "medium": (28, 60), "large": (60, 110)}[size_class]
    length = rng.uniform(*length) * k
    width = rng.uniform(2.0, 7.0) * k * (1.0 if size_class != "tiny" else 0.6)
    # A narrow fold cannot push far: keeps the ridge's slope, and so its shading, bounded.
    amplitude = min(rng.uniform(2.5, 6.0) * k, 1.2 * width + k)
    centre = rng.uniform(0.2 * size, 0.8 * size, 2)
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    along = (xs - centre[1]) * np.cos(angle) + (ys - centre[0]) * np.sin(angle)
    across = -(xs - centre[1]) * np.sin(angle) + (ys - centre[0]) * np.cos(angle)
    taper = np.where(np.abs(along) < length / 2,
                     np.cos(np.pi * along / length) ** 2, 0.0)
    profile = np.exp(-0.5 * (across / width) ** 2)
    magnitude = amplitude * profile * taper
    # Displacement direction: the fold's normal turned by `shear` towards the fold line, a mix
    # of pushing material across the line and sliding it along.
    shear = rng.uniform(-0.7, 0.7)
    normal = np.array([np.cos(angle), -np.sin(angle)])      # (y, x) of d(across)
    tangent = np.array([np.sin(angle), np.cos(angle)])      # (y, x) of d(along)
    direction = np.cos(shear) * normal + np.sin(shear) * tangent
    dy, dx = magnitude * direction[0], magnitude * direction[1]
    mask = magnitude > 1.0
    if not mask.any():
        return None
    slope = amplitude * taper * (-across / width ** 2) * profile  # d(magnitude)/d(across)
    shade = 1.0 + rng.uniform(0.12, 0.3) * np.clip(slope, -1.0, 1.0)
    warped = np.empty_like(image)
    for c in range(image.shape[2]):
        warped[:, :, c] = ndi.map_coordinates(image[:, :, c], [ys - dy, xs - dx], order=3,
                                              mode="reflect")
    return np.clip(warped * shade[:, :, None], 0, 1), mask


# ---------------------------------------------------------------------------------------------
# Categories.
# ---------------------------------------------------------------------------------------------

class TextureCategory:
    """Crops of one real surface. Normal images differ by offset, scale (0.8-1.25), a turn or
    flip allowed by the texture's symmetry, brightness, contrast, a faint light gradient and
    sensor noise, as photographs of one surface do."""

    def __init__(self, name, source, field_of_view, transforms, defects, foreign, group):
        self.name = name
        self.source = source
        self.field_of_view = field_of_view
        self.transforms = DIHEDRAL[transforms]
        self.defects = defects
        self.foreign = foreign
        self.group = group

    def packages(self):
        return {SOURCES[s].package for s in [self.source] + self.foreign}

    def colour_available(self):
        return SOURCES[self.source].pixels()[1]

    def render(self, rng, size, channels):
        crop = sample_crop(rng, SOURCES[self.source], size, self.field_of_view * size / 128.0,
                           channels)
        crop = apply_dihedral(crop, self.transforms[rng.integers(len(self.transforms))])
        return crop, {"foreign": self.foreign}

    def apply_defect(self, rng, image, defect, size_class, context):
        return TEXTURE_DEFECTS[defect](rng, image, size_class, context)


TEXTURE_DEFECTS = {
    "scratch": lambda rng, im, sc, ctx: defect_stroke(rng, im, sc, ctx, "scratch"),
    "crack": lambda rng, im, sc, ctx: defect_stroke(rng, im, sc, ctx, "crack"),
    "stain": defect_stain,
    "hole": defect_hole,
    "foreign_material": defect_foreign,
    "fold": defect_fold,
}


class CoinCategory:
    """The largest coin of scikit-image's coins photograph, cut out along its own outline,
    centred on a plain dark surface with a shift of up to 5% of the frame, a turn of up to
    15 degrees and a small change of size and exposure."""

    name = "coin"
    group = "object"
    defects = ["scratch", "stain", "missing_part", "misplaced_part", "foreign_material"]
    foreign = ["bark", "grass", "rock", "cork", "burlap"]
    source = "coins"

    def __init__(self):
        self._cutout = None

    def packages(self):
        return {SOURCES[s].package for s in [self.source] + self.foreign}

    def colour_available(self):
        return False

    def cutout(self):
        """(grey (S, S), alpha (S, S), radius in pixels) of the coin, centred in an S x S
        window of the photograph, its outline softened."""
        if self._cutout is None:
            grey = luma(SOURCES["coins"].pixels()[0])[:, :, 0].astype(np.float64)
            background = ndi.uniform_filter(ndi.grey_opening(grey, size=45), 31)
            found = (grey - background) > 40.0 / 255.0
            found = ndi.binary_fill_holes(ndi.binary_closing(found, iterations=2))
            found = ndi.binary_opening(found, iterations=2)
            labels, count = ndi.label(found)
            if count == 0:
                raise ValueError(f"{SOURCES['coins'].path}: expected coins on a dark background, "
                                 "found none")
            sizes = ndi.sum(found, labels, index=np.arange(1, count + 1))
            coin = labels == 1 + int(np.argmax(sizes))
            cy, cx = ndi.center_of_mass(coin)
            radius = np.sqrt(coin.sum() / np.pi)
            half = int(np.ceil(radius * 1.25))
            ys, xs = int(round(cy)), int(round(cx))
            padded_grey = np.pad(grey, half, mode="edge")[ys:ys + 2 * half + 1,
                                                          xs:xs + 2 * half + 1]
            padded_coin = np.pad(coin, half)[ys:ys + 2 * half + 1, xs:xs + 2 * half + 1]
            alpha = ndi.gaussian_filter(padded_coin.astype(np.float64), 0.8)
            self._cutout = (padded_grey, alpha, radius)
        return self._cutout

    def render(self, rng, size, channels):
        grey, alpha, radius = self.cutout()
        diameter = 0.62 * size * rng.uniform(0.97, 1.03)
        zoom = diameter / (2 * radius)
        turn = np.deg2rad(rng.uniform(-15, 15))
        shift = rng.uniform(-0.05, 0.05, 2) * size
        centre_out = np.array([size / 2.0, size / 2.0]) + shift
        centre_in = (np.array(grey.shape) - 1) / 2.0
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
        dy, dx = (ys - centre_out[0]) / zoom, (xs - centre_out[1]) / zoom
        sy = centre_in[0] + dy * np.cos(turn) - dx * np.sin(turn)
        sx = centre_in[1] + dy * np.sin(turn) + dx * np.cos(turn)
        coin = ndi.map_coordinates(grey, [sy, sx], order=3, mode="nearest")
        coin_alpha = np.clip(ndi.map_coordinates(alpha, [sy, sx], order=1, cval=0.0), 0, 1)
        coin = np.clip(coin * rng.uniform(0.93, 1.07), 0, 1)
        level = rng.uniform(0.2, 0.3)
        slope = rng.uniform(-0.06, 0.06, 2)
        background = (level + slope[0] * (ys / size - 0.5) + slope[1] * (xs / size - 0.5)
                      + 0.012 * smooth_noise(rng, (size, size), 6.0 * size / 128))
        image = background * (1 - coin_alpha) + coin * coin_alpha
        context = {
            "foreign": self.foreign,
            "background": background[:, :, None],
            "coin": coin[:, :, None],
            "coin_alpha": coin_alpha,
            "centre": centre_out,
            "radius": radius * zoom,
            "surface": np.clip((coin_alpha - 0.5) * 2, 0, 1),
            "surface_core": coin_alpha > 0.95,
        }
        return image[:, :, None].astype(np.float32), context

    def rim_blob(self, rng, size, size_class, context):
        """A blob centred near the coin's outline, limited to the coin."""
        angle = rng.uniform(0, 2 * np.pi)
        distance = context["radius"] * rng.uniform(0.8, 1.0)
        centre = context["centre"] + distance * np.array([np.sin(angle), np.cos(angle)])
        # About half the blob falls outside the coin; the coin fills about 30% of the frame,
        # so a large piece stays below a third of the coin.
        low, high = AREA_RANGE[size_class]
        area = rng.uniform(low, min(high, 0.1)) * size * size * 1.3
        return random_blob(rng, size, area, roughness=0.25, max_aspect=1.6, centre=centre,
                           within=context["coin_alpha"] > 0.02)

    def apply_defect(self, rng, image, defect, size_class, context):
        size = image.shape[0]
        if defect in ("scratch", "stain", "foreign_material"):
            return TEXTURE_DEFECTS[defect](rng, image, size_class, context)
        alpha = context["coin_alpha"]
        background, coin = context["background"], context["coin"]
        piece = self.rim_blob(rng, size, size_class, context)
        if piece is None or piece.sum() < 10:
            return None
        cut = soft_above(ndi.gaussian_filter(piece.astype(np.float64), 0.6 * size / 128), 0.3)
        remaining = alpha * (1 - cut)
        new = background * (1 - remaining[:, :, None]) + coin * remaining[:, :, None]
        mask = (alpha - remaining) > 0.1
        if defect == "misplaced_part":
            # The broken piece lies shifted away from the coin's centre and turned a little.
            outward = np.array(ndi.center_of_mass(piece)) - context["centre"]
            outward /= np.linalg.norm(outward) + 1e-9
            offset = outward * rng.uniform(5, 14) * size / 128 + rng.normal(0, 2, 2) * size / 128
            turn = np.deg2rad(rng.uniform(-25, 25))
            pivot = np.array(ndi.center_of_mass(piece))
            ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
            ry, rx = ys - pivot[0] - offset[0], xs - pivot[1] - offset[1]
            sy = pivot[0] + ry * np.cos(turn) - rx * np.sin(turn)
            sx = pivot[1] + ry * np.sin(turn) + rx * np.cos(turn)
            piece_alpha = ndi.map_coordinates(alpha * cut, [sy, sx], order=1, cval=0.0)
            piece_grey = ndi.map_coordinates(coin[:, :, 0], [sy, sx], order=1, mode="nearest")
            new = (new * (1 - piece_alpha[:, :, None])
                   + piece_grey[:, :, None] * piece_alpha[:, :, None])
            mask |= piece_alpha > 0.1
        return new, mask


class DagmCategory:
    """A procedural texture in the manner of DAGM 2007: white noise band-pass filtered around
    one spatial frequency and one dominant orientation, plus fine grain and a faint shading.
    Every image is a new noise draw. Defects are elliptical regions where the texture's
    statistics change (orientation, frequency, contrast, mean), and thin streaks."""

    name = "dagm"
    group = "procedural"
    defects = ["orientation", "frequency", "contrast", "intensity", "streak"]
    orientation = np.deg2rad(35.0)
    frequency = 0.075           # cycles per pixel at 128 px
    bandwidth = 0.03
    concentration = 3.0         # von Mises concentration of the orientation spectrum

    def packages(self):
        return set()

    def colour_available(self):
        return False

    def texture(self, spectrum, size, frequency, orientation, concentration):
        fy = np.fft.fftfreq(size)[:, None]
        fx = np.fft.fftfreq(size)[None, :]
        radius = np.hypot(fy, fx)
        angle = np.arctan2(fy, fx)
        gain = (np.exp(-0.5 * ((radius - frequency) / (self.bandwidth * 128 / size)) ** 2)
                * np.exp(concentration * (np.cos(2 * (angle - orientation)) - 1)))
        field = np.real(np.fft.ifft2(spectrum * gain))
        return field / (field.std() + 1e-12)

    def render(self, rng, size, channels):
        spectrum = np.fft.fft2(rng.standard_normal((size, size)))
        frequency = self.frequency * 128 / size * rng.uniform(0.95, 1.05)
        orientation = self.orientation + np.deg2rad(rng.uniform(-4, 4))
        base = self.texture(spectrum, size, frequency, orientation, self.concentration)
        grain = ndi.gaussian_filter(rng.standard_normal((size, size)), 0.7 * size / 128)
        grain /= grain.std()
        ys, xs = np.mgrid[0:size, 0:size] / size
        slope = rng.uniform(-0.04, 0.04, 2)
        level = rng.uniform(0.45, 0.55)
        amplitude = rng.uniform(0.11, 0.13)
        shading = level + slope[0] * (ys - 0.5) + slope[1] * (xs - 0.5)
        image = shading + amplitude * base + 0.03 * grain
        context = {"spectrum": spectrum, "frequency": frequency, "orientation": orientation,
                   "base": base, "amplitude": amplitude, "shading": shading, "grain": grain}
        return np.clip(image, 0, 1)[:, :, None].astype(np.float32), context

    def apply_defect(self, rng, image, defect, size_class, context):
        size = image.shape[0]
        if defect == "streak":  # thin: sized by length, 1.5-4 px wide
            length = {"tiny": (0.12, 0.25), "medium": (0.25, 0.45), "large": (0.45, 0.8)}
            major = 0.5 * rng.uniform(*length[size_class]) * size
            minor = 0.5 * rng.uniform(1.5, 4.0) * size / 128
        else:
            area = rng.uniform(*AREA_RANGE[size_class]) * size * size
            aspect = rng.uniform(1.0, 2.5)
            major = np.sqrt(area * aspect / np.pi)
            minor = area / (np.pi * major)
        angle = rng.uniform(0, np.pi)
        margin = min(major, size / 2 - 2)
        centre = rng.uniform(margin, size - margin, 2)
        radius = ellipse_radius((size, size), centre, (major, minor), angle)
        weight = 1.0 / (1.0 + np.exp(np.minimum((radius - 1.0) / 0.12, 50.0)))
        alpha = soft_above(weight, 0.3)
        mask = alpha > 0
        base, amplitude = context["base"], context["amplitude"]
        changed = base
        offset = 0.0
        if defect == "orientation":
            turn = rng.choice([-1, 1]) * np.deg2rad(rng.uniform(40, 90))
            changed = self.texture(context["spectrum"], size, context["frequency"],
                                   context["orientation"] + turn, self.concentration)
        elif defect == "frequency":
            factor = rng.uniform(0.4, 0.55) if rng.random() < 0.5 else rng.uniform(1.7, 2.3)
            changed = self.texture(context["spectrum"], size, context["frequency"] * factor,
                                   context["orientation"], self.concentration)
        elif defect == "contrast":
            changed = base * (rng.uniform(0.2, 0.45) if rng.random() < 0.6
                              else rng.uniform(1.8, 2.4))
        elif defect == "intensity":
            offset = rng.choice([-1, 1]) * rng.uniform(0.12, 0.22)
        else:  # streak
            offset = rng.choice([-1, 1], p=[0.7, 0.3]) * rng.uniform(0.18, 0.3)
        texture = (1 - alpha) * base + alpha * changed
        new = context["shading"] + amplitude * texture + 0.03 * context["grain"] + alpha * offset
        return np.clip(new, 0, 1)[:, :, None], mask


CATEGORIES = {c.name: c for c in [
    TextureCategory("wood", "wood5", 112, "flips",
                    ["scratch", "crack", "stain", "hole", "foreign_material"],
                    ["bark", "burlap", "gravel", "leather", "slate"], "oriented"),
    TextureCategory("fabric", "burlap", 128, "rot180",
                    ["scratch", "stain", "hole", "foreign_material", "fold"],
                    ["canvas", "grass", "bark", "leather", "crinklepaper"], "oriented"),
    TextureCategory("brick", "brick", 128, "mirror",
                    ["crack", "stain", "hole", "foreign_material", "fold"],
                    ["grass", "gravel", "bark", "rock", "ground1"], "oriented"),
    TextureCategory("granite", "granite1", 112, "rot180",
                    ["crack", "scratch", "stain", "hole", "foreign_material"],
                    ["slate", "rock", "ground1", "walnut", "gravel"], "oriented"),
    TextureCategory("marble", "pink_marble", 128, "d4",
                    ["crack", "scratch", "stain", "foreign_material", "fold"],
                    ["slate", "rock", "granite1", "ground1", "burlwood"], "isotropic"),
    TextureCategory("cork", "cork", 160, "d4",
                    ["scratch", "stain", "hole", "foreign_material", "fold"],
                    ["burlap", "bark", "slate", "leather", "gravel"], "isotropic"),
    TextureCategory("walnut", "walnut", 128, "d4",
                    ["scratch", "crack", "stain", "hole", "fold"], [], "isotropic"),
    TextureCategory("gravel", "gravel", 128, "d4",
                    ["scratch", "stain", "hole", "foreign_material", "fold"],
                    ["grass", "bark", "burlap", "leather", "slate"], "isotropic"),
    CoinCategory(),
    DagmCategory(),
]}


# ---------------------------------------------------------------------------------------------
# Rendering, photometric jitter and writing.
# ---------------------------------------------------------------------------------------------

def image_rng(seed, category, split, defect, index):
    key = (zlib.crc32(category.encode()), zlib.crc32(split.encode()),
           zlib.crc32(defect.encode()), index)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


class Photometry:
    """What the camera adds: contrast and brightness change, a faint light gradient and sensor
    noise. It is a fixed pixelwise function once drawn, so a defective image and its clean
    original differ exactly where the defect changed the surface."""

    def __init__(self, rng, clean):
        size = clean.shape[0]
        self.mean = clean.mean(axis=(0, 1))
        self.contrast = rng.uniform(0.9, 1.1)
        self.brightness = rng.uniform(-0.04, 0.04)
        ys, xs = np.mgrid[0:size, 0:size] / size - 0.5
        slope = rng.uniform(-0.03, 0.03, 2)
        self.gradient = (slope[0] * ys + slope[1] * xs)[:, :, None]
        self.noise = rng.normal(0.0, 1.2 / 255.0, clean.shape)

    def __call__(self, surface):
        out = (surface - self.mean) * self.contrast + self.mean + self.brightness
        out = out + self.gradient + self.noise
        return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_good(category, rng, size, channels):
    clean, _ = category.render(rng, size, channels)
    clean = clean.astype(np.float64)
    return Photometry(rng, clean)(clean)


def render_defective(category, defect, size_class, rng, size, channels, where):
    for _ in range(200):
        clean, context = category.render(rng, size, channels)
        clean = clean.astype(np.float64)
        camera = Photometry(rng, clean)
        result = category.apply_defect(rng, clean, defect, size_class, context)
        if result is None:
            continue
        surface, mask = result
        if mask.sum() < 12 * (size / 128.0) ** 2:
            continue
        if defect not in ("scratch", "crack", "streak") and not area_ok(mask, size_class):
            continue
        surface = np.where(mask[:, :, None], surface.astype(np.float64), clean)
        before, after = camera(clean), camera(surface)
        change = np.abs(after.astype(np.int16) - before.astype(np.int16))
        if change[~mask].any():
            raise AssertionError(f"{where}: the defect changed pixels outside its mask")
        if change[mask].mean() < MIN_MEAN_CHANGE:
            continue
        return after, mask
    raise RuntimeError(f"{where}: no visible {size_class} {defect} in 200 draws")


def save_png(path, pixels):
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    Image.fromarray(pixels).save(path, optimize=False, compress_level=6)


def build_category(category, root, size, seed, colour, counts):
    channels = 3 if colour and category.colour_available() else 1
    train, test_good, per_defect = counts
    base = os.path.join(root, category.name)
    for split, folder, count in (("train", "train/good", train), ("test", "test/good", test_good)):
        os.makedirs(os.path.join(base, folder), exist_ok=True)
        for i in range(count):
            rng = image_rng(seed, category.name, split, "good", i)
            save_png(os.path.join(base, folder, f"{i:03d}.png"),
                     render_good(category, rng, size, channels))
    for defect in category.defects:
        image_dir = os.path.join(base, "test", defect)
        mask_dir = os.path.join(base, "ground_truth", defect)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(mask_dir, exist_ok=True)
        for i in range(per_defect):
            rng = image_rng(seed, category.name, "test", defect, i)
            size_class = SIZE_CLASSES[i % 3]
            where = f"{category.name}/{defect}/{i:03d}"
            image, mask = render_defective(category, defect, size_class, rng, size, channels,
                                           where)
            save_png(os.path.join(image_dir, f"{i:03d}.png"), image)
            save_png(os.path.join(mask_dir, f"{i:03d}_mask.png"), mask.astype(np.uint8) * 255)


def missing_packages(categories):
    needed = set()
    for category in categories:
        needed |= category.packages()
    missing = set()
    for source in SOURCES.values():
        if source.package in needed and not os.path.isfile(source.path):
            missing.add(source.package)
    return sorted(missing)


# ---------------------------------------------------------------------------------------------
# Layout check.
# ---------------------------------------------------------------------------------------------

def list_pngs(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".png")) if os.path.isdir(folder) \
        else []


def check(root):
    """Verify the MVTec layout under root; print per-category counts. Returns the error count."""
    errors = []
    if not os.path.isdir(root):
        print(f"{root}: expected a benchmark folder, found none", file=sys.stderr)
        return 1
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not names:
        errors.append(f"{root}: expected category folders, found none")
    print(f"{'category':<10} {'train':>6} {'good':>5} {'defect':>7}  defect types")
    for name in names:
        base = os.path.join(root, name)
        train = list_pngs(os.path.join(base, "train", "good"))
        test_dir = os.path.join(base, "test")
        test_good = list_pngs(os.path.join(test_dir, "good"))
        if not train:
            errors.append(f"{name}: expected images in train/good, found none")
        if not test_good:
            errors.append(f"{name}: expected images in test/good, found none")
        if os.path.isdir(os.path.join(base, "ground_truth", "good")):
            errors.append(f"{name}: good images must have no masks, found ground_truth/good")
        defects = sorted(d for d in os.listdir(test_dir)
                         if d != "good" and os.path.isdir(os.path.join(test_dir, d))) \
            if os.path.isdir(test_dir) else []
        defective = 0
        summary = []
        for defect in defects:
            images = list_pngs(os.path.join(test_dir, defect))
            mask_dir = os.path.join(base, "ground_truth", defect)
            masks = set(list_pngs(mask_dir))
            for image_name in images:
                stem = image_name[:-4]
                mask_name = f"{stem}_mask.png"
                if mask_name not in masks:
                    errors.append(f"{name}/test/{defect}/{image_name}: expected "
                                  f"ground_truth/{defect}/{mask_name}, found none")
                    continue
                masks.discard(mask_name)
                with Image.open(os.path.join(test_dir, defect, image_name)) as image:
                    image_size = image.size
                with Image.open(os.path.join(mask_dir, mask_name)) as mask_image:
                    mode, mask_size = mask_image.mode, mask_image.size
                    mask = np.asarray(mask_image)
                if mode not in ("L", "1") or mask_size != image_size:
                    errors.append(f"{name}/ground_truth/{defect}/{mask_name}: expected a "
                                  f"single-channel {image_size[0]}x{image_size[1]} mask, found "
                                  f"mode {mode} {mask_size[0]}x{mask_size[1]}")
                    continue
                values = np.unique(mask)
                if not mask.any():
                    errors.append(f"{name}/ground_truth/{defect}/{mask_name}: mask is empty")
                if mode == "L" and not set(values.tolist()) <= {0, 255}:
                    errors.append(f"{name}/ground_truth/{defect}/{mask_name}: expected values "
                                  f"0 and 255, found {values[:6].tolist()}")
            for orphan in sorted(masks):
                errors.append(f"{name}/ground_truth/{defect}/{orphan}: mask without an image")
            defective += len(images)
            summary.append(f"{defect} {len(images)}")
        if not defects:
            errors.append(f"{name}: expected defect folders under test/, found none")
        print(f"{name:<10} {len(train):>6} {len(test_good):>5} {defective:>7}  "
              + ", ".join(summary))
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{len(names)} categories, {len(errors)} problems")
    return len(errors)


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Build a semi-synthetic industrial-inspection benchmark (MVTec AD layout) "
                    "from photographs in Debian packages, or check one.")
    parser.add_argument("--out", help="folder to write the benchmark into")
    parser.add_argument("--check", metavar="ROOT", help="verify the layout under ROOT and exit")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (0)")
    parser.add_argument("--categories", default="",
                        help="comma-separated subset of: " + ",".join(CATEGORIES))
    parser.add_argument("--colour", action="store_true",
                        help="write RGB for categories whose photograph has colour")
    parser.add_argument("--train", type=int, default=TRAIN_GOOD, help="train/good images (200)")
    parser.add_argument("--test-good", type=int, default=TEST_GOOD, help="test/good images (40)")
    parser.add_argument("--per-defect", type=int, default=PER_DEFECT,
                        help="images per defect type (16)")
    args = parser.parse_args(argv)

    if args.check:
        return 1 if check(args.check) else 0
    if not args.out:
        parser.error("expected --out ROOT (or --check ROOT)")
    if args.size < 64:
        parser.error(f"--size: expected at least 64, found {args.size}")
    if min(args.train, args.test_good, args.per_defect) < 1:
        parser.error("--train, --test-good and --per-defect must be at least 1")
    names = [n for n in args.categories.split(",") if n] or list(CATEGORIES)
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        parser.error(f"--categories: unknown {', '.join(unknown)}; expected some of "
                     f"{', '.join(CATEGORIES)}")
    categories = [CATEGORIES[n] for n in names]
    missing = missing_packages(categories)
    if missing:
        print(f"make_benchmark: the photographs come from Debian packages that are not "
              f"installed: {' '.join(missing)}\n  run: apt-get install --no-install-recommends "
              f"{' '.join(missing)}", file=sys.stderr)
        return 2

    counts = (args.train, args.test_good, args.per_defect)
    total = time.time()
    for category in categories:
        start = time.time()
        build_category(category, args.out, args.size, args.seed, args.colour, counts)
        images = args.train + args.test_good + args.per_defect * len(category.defects)
        print(f"{category.name:<10} {category.group:<10} {images} images  "
              f"{time.time() - start:5.1f} s", flush=True)
    print(f"wrote {len(categories)} categories to {args.out} in {time.time() - total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
