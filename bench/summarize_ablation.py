#!/usr/bin/env python3
"""Summarises an ablation: eval_one_class runs of several recipe variants, grouped by the
techniques each run's recorded recipe switched on (rotation restoration, precise batch norm,
the rotation head; on colour data also whether the restoration greyed), not by file name.
For each variant: the mean over classes of each seed, their mean and sample standard
deviation, and the change against the official recipe; then each variant's per-class mean
over seeds. Plain python3 (no numpy).

    python3 bench/summarize_ablation.py runs/ablation_mnist/*/seed*.json results/2026-11-28-mnist-official/mnist_results*.json

Runs of the same variant, seed and class count once (the last file wins). Files written before
eval_one_class recorded the recipe and seed (results/2026-11-28-mnist-official/mnist_results*.json) are the official recipe;
their seed is read from the file name (`..._seedN.json`, else 0). A seed counts in a variant's
mean only when it has every class of the table (every class any file has), so that all rows
average the same classes; a variant without such a seed says how many classes it has. The
per-class table averages every seed that ran the class, and gives the count of seeds where it
is fewer than the most any cell has.
"""
import json
import os
import re
import statistics
import sys

from summarize_one_class import CIFAR10, pop_key
# Rotation restoration: 0 none, 1 with colour kept, 2 with colour images greyed (as the named
# recipes do; on grey data greying changes nothing, so every restoration counts as 2 there).
NONE, KEEP_COLOUR, GREYING = 0, 1, 2
NAMED = {  # the named recipes (include/skipganomaly/recipe.hpp), by their techniques
    (NONE, False, False): "official",
    (GREYING, True, False): "robust",
    (GREYING, True, True): "robust_rotation",
}


def techniques(record):
    """(rotation restoration, precise batch norm, rotation head) of a run's recipe."""
    recipe = record.get("recipe")
    if recipe is None:
        return (NONE, False, False)
    restoration = recipe.get("restoration", "none")
    corruption = restoration["corruption"] if isinstance(restoration, dict) else restoration
    if corruption not in ("none", "rotation") or recipe.get("gated_skips", 0) or record.get("bottleneck_channels", 0):
        sys.exit(f"{record.get('dataset')} class {record.get('class')}: a variant this table has no row for: {recipe}")
    # Records from before greying was a setting have the restoration as a string: it greyed.
    greyed = not isinstance(restoration, dict) or restoration.get("gray", True) or record.get("dataset") != "cifar10"
    rotation = NONE if corruption == "none" else GREYING if greyed else KEEP_COLOUR
    return (rotation, bool(recipe.get("recompute_batch_norm")), "rotation_prediction" in recipe)


def label(variant, dataset):
    restoration, precise_bn, head = variant
    parts = []
    if restoration == GREYING:
        parts.append("rotation restoration" + (" (and greying)" if dataset == "cifar10" else ""))
    elif restoration == KEEP_COLOUR:
        parts.append("rotation restoration (colour kept)")
    if precise_bn:
        parts.append("precise BN")
    if head:
        parts.append("rotation head")
    text = " + ".join(parts) or "none"
    return f"{text} (`{NAMED[variant]}`)" if variant in NAMED else text


def main(paths):
    key = pop_key(paths)
    if not paths:
        sys.exit(__doc__)
    runs = {}  # variant -> seed -> class -> AUROC
    protocol = {}  # class -> (training images, paper protocol): one protocol per table
    dataset = None
    for path in paths:
        match = re.search(r"seed(\d+)", os.path.basename(path))
        with open(path) as f:
            for r in json.load(f):
                seed = r.get("seed", int(match.group(1)) if match else 0)
                c = r["class"] if "class" in r else r["digit"]
                this = (r["training_images"], r.get("paper_protocol", False))
                if protocol.setdefault(c, this) != this:
                    sys.exit(f"{path}: class {c} was run with {this} (training images, paper protocol) here and "
                             f"{protocol[c]} elsewhere; summarise one protocol at a time")
                runs.setdefault(techniques(r), {}).setdefault(seed, {})[c] = r[key]
                dataset = r.get("dataset", "mnist")
    # official first, then each technique alone and combined, the default last, its
    # colour-kept variant after it
    order = sorted(runs, key=lambda v: (v[0] != NONE, v[2], v[1], -v[0]))
    name = (lambda c: f"{c} {CIFAR10[c]}") if dataset == "cifar10" else str

    classes = sorted(set().union(*(set(s) for seeds in runs.values() for s in seeds.values())))

    def complete_means(variant):
        """The seeds of `variant` that ran every class of the table, and their means over the classes."""
        seeds = runs[variant]
        complete = sorted(s for s in seeds if set(seeds[s]) >= set(classes))
        return complete, [statistics.mean(seeds[s][c] for c in classes) for s in complete]

    official_variant = (NONE, False, False)
    official = complete_means(official_variant)[1] if official_variant in runs else []
    print("| techniques | seeds | mean of the classes, per seed | mean | sd | change against official |")
    print("|---|---|---|---|---|---|")
    for v in order:
        complete, means = complete_means(v)
        if not means:
            ran = set().union(*(set(s) for s in runs[v].values()))
            print(f"| {label(v, dataset)} | no seed has all {len(classes)} classes "
                  f"({len(ran)} ran) | | | | |")
            continue
        mean = statistics.mean(means)
        sd = f"{statistics.stdev(means):.4f}" if len(means) > 1 else "-"
        change = f"{mean - statistics.mean(official):+.4f}" if official and v != official_variant else ""
        print(f"| {label(v, dataset)} | {', '.join(map(str, complete))} | " +
              ", ".join(f"{m:.4f}" for m in means) + f" | **{mean:.4f}** | {sd} | {change} |")

    per_class = {(v, c): [seeds[c] for seeds in runs[v].values() if c in seeds] for v in order for c in classes}
    most = max(len(values) for values in per_class.values())
    print(f"\nPer class, mean over the seeds that ran it ((n): only n of {most} seeds ran):\n")
    print("| class | " + " | ".join(label(v, dataset) for v in order) + " |")
    print("|---" * (len(order) + 1) + "|")
    for c in classes:
        cells = []
        for v in order:
            values = per_class[(v, c)]
            count = f" ({len(values)})" if values and len(values) < most else ""
            cells.append(f"{statistics.mean(values):.4f}{count}" if values else "-")
        print(f"| {name(c)} | " + " | ".join(cells) + " |")
    print(f"\n{key}; {len(classes)} classes")


if __name__ == "__main__":
    main(sys.argv[1:])
