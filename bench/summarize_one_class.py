#!/usr/bin/env python3
"""Summarises eval_one_class runs: per class, the AUROC of each seed, their mean and sample
standard deviation; then the mean over classes of each seed, and its mean and standard
deviation over seeds. Plain python3 (no numpy). Input: eval_one_class --out files, any number,
from any seeds; runs of the same seed and class count once (the last file wins).

    python3 bench/summarize_one_class.py runs/mnist_robust_seed*.json [--key auroc_train_mode]
"""
import json
import statistics
import sys

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def pop_key(arguments):
    """Removes `--key NAME` from arguments and returns NAME (default: the eval-mode AUROC)."""
    if "--key" not in arguments:
        return "auroc_eval_mode"
    at = arguments.index("--key")
    key = arguments[at + 1]
    del arguments[at:at + 2]
    return key


def main(arguments):
    key = pop_key(arguments)
    if not arguments:
        sys.exit(__doc__)
    runs = {}  # seed -> class -> record
    dataset = None
    for path in arguments:
        with open(path) as f:
            for r in json.load(f):
                runs.setdefault(r.get("seed", 0), {})[r["class"] if "class" in r else r["digit"]] = r
                dataset = r.get("dataset", "mnist")
    seeds = sorted(runs)
    classes = sorted(set().union(*(set(r) for r in runs.values())))
    name = (lambda c: f"{c} {CIFAR10[c]}") if dataset == "cifar10" else str
    print(f"| class | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd |")
    print("|---" * (len(seeds) + 3) + "|")
    for c in classes:
        values = [runs[s][c][key] if c in runs[s] else None for s in seeds]
        present = [v for v in values if v is not None]
        sd = f"{statistics.stdev(present):.4f}" if len(present) > 1 else "-"
        print(f"| {name(c)} | " + " | ".join(f"{v:.4f}" if v is not None else "-" for v in values) +
              f" | {statistics.mean(present):.4f} | {sd} |")
    complete = [s for s in seeds if set(runs[s]) == set(classes)]
    means = [statistics.mean(runs[s][c][key] for c in classes) for s in complete]
    if means:
        print(f"| **mean of {len(classes)} classes** | " +
              " | ".join(f"**{statistics.mean(runs[s][c][key] for c in classes):.4f}**" if s in complete else "-"
                         for s in seeds) + f" | **{statistics.mean(means):.4f}** | " +
              (f"{statistics.stdev(means):.4f}" if len(means) > 1 else "-") + " |")
    kept = [runs[s][c].get("kept_epoch") for s in seeds for c in runs[s]]
    print(f"\n{key}; {len(complete)} complete seed(s) of {len(seeds)}; kept epochs: {kept}")


if __name__ == "__main__":
    main(sys.argv[1:])
