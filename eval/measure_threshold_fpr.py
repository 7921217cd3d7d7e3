#!/usr/bin/env python3
"""False-positive rate of the default threshold rule on real held-out normal images.

Scores every test image of one MNIST digit (the normal class) with a trained model through
the command-line tool, then, many times over, draws n of them as the "validation set",
sets the threshold from those n scores (the plain 0.99 quantile, and our rule:
threshold_from_normal_scores, transcribed in simulate_threshold_rule.py), and measures the
share of the remaining normal test images at or above it. Needs numpy.

  build/tools/skipganomaly demo --out demo            # digit 1, or fit your own model
  /usr/bin/python3 eval/measure_threshold_fpr.py --cli build/tools/skipganomaly \\
      --model demo/model.safetensors --mnist data/mnist --digit 1
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python", "interop"))
from check_official_round_trip import write_bmp  # noqa: E402
from simulate_threshold_rule import rule  # noqa: E402


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cli", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--mnist", required=True, help="folder with t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz")
    p.add_argument("--digit", type=int, default=1)
    p.add_argument("--sets", type=int, default=2000, help="validation sets drawn per n")
    args = p.parse_args()
    images = read_idx(os.path.join(args.mnist, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(args.mnist, "t10k-labels-idx1-ubyte.gz"))
    normal = images[labels == args.digit]
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, image in enumerate(normal):
            paths.append(os.path.join(folder, f"{i:05d}.bmp"))
            write_bmp(paths[-1], image)
        out = subprocess.run([args.cli, "score", "--model", args.model, *paths], capture_output=True, text=True,
                             check=True)
    scores = np.array([json.loads(line)["score"] for line in out.stdout.splitlines()], dtype=np.float32)
    print(f"{len(scores)} normal test images of digit {args.digit}; scores min {scores.min():.5f}, "
          f"median {np.median(scores):.5f}, max {scores.max():.5f}")
    rng = np.random.default_rng(0)
    for n in (20, 40, 100):
        if n >= len(scores) // 2:
            break
        rates = {"plain 0.99 quantile": [], "rule": []}
        for _ in range(args.sets):
            order = rng.permutation(len(scores))
            validation, rest = scores[order[:n]], scores[order[n:]]
            rates["plain 0.99 quantile"].append(np.mean(rest >= np.quantile(validation.astype(np.float64), 0.99)))
            rates["rule"].append(np.mean(rest >= rule(validation)))
        cells = [f"{k}: mean {100 * np.mean(v):.2f}% (p10 {100 * np.quantile(v, 0.1):.2f}%, "
                 f"p90 {100 * np.quantile(v, 0.9):.2f}%)" for k, v in rates.items()]
        print(f"n {n:4d}  " + "  |  ".join(cells))


if __name__ == "__main__":
    main()
