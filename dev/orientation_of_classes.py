#!/usr/bin/env python3
"""Does each class's set of normal training images have an orientation that its mean image
shows? The set is split at random into halves A and B; the table gives, for each quarter turn
k = 1, 2, 3, |mean(A) - turn_k(mean(B))| / |mean(A) - mean(B)|: about 1 when turning changes
the mean image no more than sampling does, larger when the class has a typical orientation.

A candidate label-free test for the default recipe's orientation assumption (docs/technical-report.md,
"Data without an orientation"). It grows with the square root of the set size, so compare
sets of one size.

    /usr/bin/python3 dev/orientation_of_classes.py mnist data/mnist
    /usr/bin/python3 dev/orientation_of_classes.py cifar10 data/cifar10 --max-train 1000
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "eval"))
from make_rotated_mnist import read_images  # noqa: E402


def mnist(folder):
    rows, cols, pixels = read_images(f"{folder}/train-images-idx3-ubyte.gz")
    images = np.frombuffer(b"".join(pixels), np.uint8).reshape(len(pixels), 1, rows, cols).astype(np.float32) / 255
    labels = np.frombuffer(gzip.open(f"{folder}/train-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    return images, labels


def cifar10(folder):
    from PIL import Image
    sheets = [np.asarray(Image.open(f"{folder}/data_batch_{i}.png").convert("RGB")).reshape(-1, 32, 32, 3)
              for i in range(1, 6)]
    images = np.concatenate(sheets).transpose(0, 3, 1, 2).astype(np.float32) / 255
    labels = np.array(json.load(open(f"{folder}/train_lables.json")))
    return images, labels


def turn_ratios(images, rng):
    order = rng.permutation(len(images))
    a = images[order[: len(images) // 2]].mean(0)
    b = images[order[len(images) // 2:]].mean(0)
    noise = np.linalg.norm(a - b)
    return [np.linalg.norm(a - np.rot90(b, k, axes=(1, 2))) / noise for k in (1, 2, 3)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["mnist", "cifar10"])
    parser.add_argument("folder")
    parser.add_argument("--max-train", type=int, default=0, help="first N images of each class (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels = (mnist if args.dataset == "mnist" else cifar10)(args.folder)
    rng = np.random.default_rng(args.seed)
    print("| class | images | turned 90 | turned 180 | turned 270 |")
    print("|---|---:|---:|---:|---:|")
    for c in range(10):
        chosen = images[labels == c]
        if args.max_train:
            chosen = chosen[: args.max_train]
        ratios = turn_ratios(chosen, rng)
        print(f"| {c} | {len(chosen)} | " + " | ".join(f"{r:.1f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()
