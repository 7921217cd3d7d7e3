#!/usr/bin/env python3
"""Writes tests/fixtures/resize.json: what Pillow's convert() and BILINEAR resize produce.

torchvision's Resize on a PIL image calls Image.resize(..., BILINEAR), so these numbers pin
sga::preprocess to the reference pre-processing. Each 8-bit case holds a small random image,
the channel conversion applied first (as the training script's Image.convert would), and the
resized result; each float case pins the mode "F" resize that preprocess_float_chw and
resize_plane follow.

Run with the system Python (Pillow, NumPy):  /usr/bin/python3 scripts/make_image_fixtures.py
"""
import json
import os

import numpy as np
import PIL
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "resize.json")


def main():
    rng = np.random.default_rng(20240611)
    cases = []

    def add(height, width, source_mode, target_mode, sizes):
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[source_mode]
        shape = (height, width) if channels == 1 else (height, width, channels)
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        image = Image.fromarray(pixels, source_mode)
        converted = image.convert(target_mode)
        for size in sizes:
            resized = converted.resize((size, size), Image.BILINEAR)
            out = np.asarray(resized, dtype=np.uint8)
            cases.append({
                "name": f"{source_mode}{height}x{width}->{target_mode}{size}",
                "source_mode": source_mode,
                "target_mode": target_mode,
                "height": height,
                "width": width,
                "size": size,
                "input": pixels.reshape(-1).tolist(),   # (H, W, C) interleaved
                "output": out.reshape(-1).tolist(),     # (size, size, C) interleaved
            })

    add(5, 7, "L", "L", [1, 3, 4, 9, 16])
    add(13, 11, "L", "L", [4, 6, 11, 13, 32])
    add(40, 30, "L", "L", [8, 7])
    add(9, 6, "RGB", "RGB", [4, 12])
    add(9, 6, "RGB", "L", [4, 12])
    add(16, 16, "RGB", "L", [16, 5])
    add(7, 7, "RGBA", "RGB", [5])
    add(7, 10, "RGBA", "L", [6])

    float_cases = []
    for height, width, sizes in [(5, 7, [3, 9]), (12, 9, [4, 12, 20]), (31, 31, [8])]:
        plane = rng.uniform(-1.0, 1.0, (height, width)).astype(np.float32)
        for size in sizes:
            out = np.asarray(Image.fromarray(plane, "F").resize((size, size), Image.BILINEAR),
                             dtype=np.float32)
            float_cases.append({
                "name": f"F{height}x{width}->{size}",
                "height": height,
                "width": width,
                "size": size,
                "input": [float(v) for v in plane.reshape(-1)],
                "output": [float(v) for v in out.reshape(-1)],
            })

    with open(OUT, "w") as f:
        json.dump({"generator": "scripts/make_image_fixtures.py", "pillow": PIL.__version__,
                   "uint8": cases, "float": float_cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} 8-bit cases, {len(float_cases)} float cases, "
          f"{os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
