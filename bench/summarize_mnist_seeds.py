#!/usr/bin/env python3
"""Seed variance of the MNIST one-class evaluation: a Markdown table of the last-epoch AUROC
per digit and seed (both scorings), the ten-digit mean of each seed, and the mean and standard
deviation over seeds. Input: eval_mnist --out files, one per seed, named on the command line
as SEED=FILE.

    /usr/bin/python3 bench/summarize_mnist_seeds.py 0=results/2026-11-28-mnist-official/mnist_results.json \
        1=results/2026-11-28-mnist-official/mnist_results_seed1.json 2=results/2026-11-28-mnist-official/mnist_results_seed2.json
"""
import json
import statistics
import sys


def main(arguments):
    if not arguments:
        sys.exit(__doc__)
    runs = {}
    for argument in arguments:
        seed, _, path = argument.partition("=")
        with open(path) as f:
            runs[int(seed)] = {r["digit"]: r for r in json.load(f)}
    seeds = sorted(runs)
    digits = sorted(set.intersection(*(set(r) for r in runs.values())))
    if len(digits) != 10:
        print(f"note: only digits {digits} are in every file", file=sys.stderr)

    for key, title in (("auroc_eval_mode", "eval mode (running statistics)"),
                       ("auroc_train_mode", "train mode (official batch statistics)")):
        print(f"\nLast-epoch AUROC, {title}\n")
        print("| digit | " + " | ".join(f"seed {s}" for s in seeds) + " | mean over seeds |")
        print("|---" * (len(seeds) + 2) + "|")
        for d in digits:
            values = [runs[s][d][key] for s in seeds]
            print(f"| {d} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {statistics.mean(values):.4f} |")
        means = [statistics.mean(runs[s][d][key] for d in digits) for s in seeds]
        print(f"| **mean of {len(digits)} digits** | " + " | ".join(f"**{m:.4f}**" for m in means) +
              f" | **{statistics.mean(means):.4f}** |")
        if len(means) > 1:
            print(f"\n{len(digits)}-digit mean over {len(seeds)} seeds: {statistics.mean(means):.4f}, "
                  f"standard deviation {statistics.stdev(means):.4f} (sample), "
                  f"range {min(means):.4f} to {max(means):.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
