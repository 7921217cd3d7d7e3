#!/usr/bin/env python3
"""Last-epoch AUROC of one digit across runs of two implementations (or any labelled groups):
every run, then each group's mean and sample standard deviation, and Welch's t statistic of the
difference of the group means: the table of docs/technical-report.md, "Digit 8 against
PyTorch". Input: eval_one_class --out files (ours) or bench/reference_mnist_pytorch.py output
(PyTorch), as GROUP=FILE arguments; the seed is read from the file or, for files written before
the seed was recorded, from a "_seedN" in its name.

    /usr/bin/python3 bench/compare_digit_runs.py --digit 8 ours=results/2026-11-28-mnist-official/mnist_results.json \
        pytorch=results/2026-11-28-mnist-digit8-vs-pytorch/pytorch_seed0.json ...
"""
import argparse
import json
import math
import re
import statistics


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digit", type=int, required=True)
    parser.add_argument("runs", nargs="+", metavar="GROUP=FILE")
    args = parser.parse_args()
    groups = {}
    print("| implementation | seed | AUROC, eval mode | AUROC, train mode | file |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        group, _, path = run.partition("=")
        with open(path) as f:
            results = [r for r in json.load(f) if r["digit"] == args.digit]
        if not results:
            raise SystemExit(f"{path} has no result for digit {args.digit}")
        r = results[0]
        seed = r.get("seed")
        if seed is None:
            match = re.search(r"_seed(\d+)", path)
            seed = int(match.group(1)) if match else 0  # mnist_results.json is seed 0
        groups.setdefault(group, []).append((r["auroc_eval_mode"], r["auroc_train_mode"]))
        print(f"| {group} | {seed} | {r['auroc_eval_mode']:.4f} | {r['auroc_train_mode']:.4f} | {path} |")
    print()
    stats = {}
    for group, values in groups.items():
        for column, name in ((0, "eval mode"), (1, "train mode")):
            v = [x[column] for x in values]
            sd = statistics.stdev(v) if len(v) > 1 else float("nan")
            stats[(group, column)] = (statistics.mean(v), sd, len(v))
            print(f"{group:10s} {name:10s}: mean {statistics.mean(v):.4f}, sd {sd:.4f}, {len(v)} runs")
    names = list(groups)
    if len(names) == 2:
        for column, name in ((0, "eval mode"), (1, "train mode")):
            (m1, s1, n1), (m2, s2, n2) = stats[(names[0], column)], stats[(names[1], column)]
            if n1 > 1 and n2 > 1:
                t = (m1 - m2) / math.sqrt(s1 * s1 / n1 + s2 * s2 / n2)
                print(f"{name}: {names[0]} - {names[1]} = {m1 - m2:+.4f}, Welch t = {t:+.2f}")


if __name__ == "__main__":
    main()
