#!/usr/bin/env python3
"""Writes a rotation-invariant copy of an MNIST folder: every training and test image turned by
a random multiple of 90 degrees (seeded, one draw per image), labels unchanged, in the same
gzipped IDX files, so that `eval_one_class --dataset mnist --data OUT` reads it as it is.

It measures the limit that docs/technical-report.md names for the default recipe: rotation restoration
and the rotation head assume normal images have an orientation. Here they have none, exactly
for the four turns the recipe uses. Plain python3 (no numpy).

    python3 eval/make_rotated_mnist.py data/mnist /tmp/mnist_rotated [--seed 0]
"""
import argparse
import gzip
import os
import random
import shutil
import struct


def read_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        raise ValueError(f"{path}: not an IDX image file (magic {magic})")
    size = rows * cols
    pixels = data[16:]
    if len(pixels) != count * size:
        raise ValueError(f"{path}: {len(pixels)} pixel bytes for {count} images of {rows}x{cols}")
    return rows, cols, [pixels[i * size:(i + 1) * size] for i in range(count)]


def turn(image, rows, cols, quarter_turns):
    """The image turned counter-clockwise by quarter_turns x 90 degrees (square images)."""
    pixels = [list(image[r * cols:(r + 1) * cols]) for r in range(rows)]
    for _ in range(quarter_turns % 4):
        pixels = [list(row) for row in zip(*pixels)][::-1]
    return bytes(v for row in pixels for v in row)


def write_images(path, rows, cols, images):
    header = struct.pack(">IIII", 2051, len(images), rows, cols)
    tmp = path + ".tmp"
    with gzip.open(tmp, "wb") as f:
        f.write(header + b"".join(images))
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    for split in ("train", "t10k"):
        rows, cols, images = read_images(os.path.join(args.source, f"{split}-images-idx3-ubyte.gz"))
        if rows != cols:
            raise ValueError("quarter turns need square images")
        turned = [turn(image, rows, cols, rng.randrange(4)) for image in images]
        write_images(os.path.join(args.out, f"{split}-images-idx3-ubyte.gz"), rows, cols, turned)
        labels = f"{split}-labels-idx1-ubyte.gz"
        shutil.copyfile(os.path.join(args.source, labels), os.path.join(args.out, labels))
        print(f"{split}: {len(turned)} images of {rows}x{cols} turned")


if __name__ == "__main__":
    main()
