#!/usr/bin/env python3
"""Tables of eval_one_class runs (eval/eval_one_class.cpp --out files). Plain python3 (no numpy).

    python3 eval/summarize_one_class.py [--table classes|techniques|orientation-check]
                                        [--key auroc_eval_mode|auroc_train_mode|...] FILE.json ...

--table classes (the default): per class, the AUROC of each seed, their mean and sample
  standard deviation; then the mean over classes of each seed that ran every class, and its
  mean and standard deviation over seeds. Runs of the same seed and class count once (the last
  file wins).
      python3 eval/summarize_one_class.py runs/mnist_robust_rotation/seed*.json [--key auroc_train_mode]

--table techniques: an ablation. Runs of several recipe variants, grouped by the techniques
  each run's recorded recipe switched on (rotation restoration, precise batch norm, the
  rotation head; on colour data also whether the restoration greyed), not by file name. For
  each variant: the mean over classes of each seed, their mean and sample standard deviation,
  and the change against the official recipe; then each variant's per-class mean over seeds.
  Runs of the same variant, seed and class count once (the last file wins). A seed counts in a
  variant's mean only when it has every class of the table (every class any file has), so that
  all rows average the same classes; a variant without such a seed says how many classes it
  has. The per-class table averages every seed that ran the class, and gives the count of
  seeds where it is fewer than the most any cell has.
      python3 eval/summarize_one_class.py --table techniques runs/ablation_mnist/*/seed*.json

--table orientation-check: the orientation check's decisions (orientation_check.hpp) from the
  files `eval_one_class --check-only` writes: one row per file (data set, seed), one column per
  class, each cell "t (kept)" or "t (fell back)".
      python3 eval/summarize_one_class.py --table orientation-check results/2026-12-02-orientation-check/*.json

A run's seed is the one its record holds; files written before eval_one_class recorded the
seed and the recipe (results/2026-11-28-mnist-official/mnist_results*.json) have the seed in
their name (`..._seedN.json`, else 0) and are the official recipe.
"""
import argparse
import json
import os
import re
import statistics
import sys

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_runs(paths):
    """(path, record, seed, class) of every record of every file, in order."""
    for path in paths:
        match = re.search(r"seed(\d+)", os.path.basename(path))
        with open(path) as f:
            for r in json.load(f):
                seed = r.get("seed", int(match.group(1)) if match else 0)
                yield path, r, seed, r["class"] if "class" in r else r["digit"]


def class_namer(dataset):
    return (lambda c: f"{c} {CIFAR10[c]}") if dataset == "cifar10" else str


# ---- --table classes ------------------------------------------------------------------------

def classes_table(paths, key):
    runs = {}  # seed -> class -> record
    dataset = None
    for _, r, seed, c in read_runs(paths):
        runs.setdefault(seed, {})[c] = r
        dataset = r.get("dataset", "mnist")
    seeds = sorted(runs)
    classes = sorted(set().union(*(set(r) for r in runs.values())))
    name = class_namer(dataset)
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
    kept_text = f"; kept epochs: {kept}" if any(k is not None for k in kept) else ""  # older files lack it
    print(f"\n{key}; {len(complete)} complete seed(s) of {len(seeds)}{kept_text}")


# ---- --table techniques ---------------------------------------------------------------------

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


def technique_label(variant, dataset):
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


def techniques_table(paths, key):
    runs = {}  # variant -> seed -> class -> AUROC
    protocol = {}  # class -> (training images, paper protocol): one protocol per table
    dataset = None
    for path, r, seed, c in read_runs(paths):
        this = (r["training_images"], r.get("paper_protocol", False))
        if protocol.setdefault(c, this) != this:
            sys.exit(f"{path}: class {c} was run with {this} (training images, paper protocol) here and "
                     f"{protocol[c]} elsewhere; summarise one protocol at a time")
        runs.setdefault(techniques(r), {}).setdefault(seed, {})[c] = r[key]
        dataset = r.get("dataset", "mnist")
    # official first, then each technique alone and combined, the default last, its
    # colour-kept variant after it
    order = sorted(runs, key=lambda v: (v[0] != NONE, v[2], v[1], -v[0]))
    name = class_namer(dataset)
    label = lambda v: technique_label(v, dataset)  # noqa: E731

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
            print(f"| {label(v)} | no seed has all {len(classes)} classes "
                  f"({len(ran)} ran) | | | | |")
            continue
        mean = statistics.mean(means)
        sd = f"{statistics.stdev(means):.4f}" if len(means) > 1 else "-"
        change = f"{mean - statistics.mean(official):+.4f}" if official and v != official_variant else ""
        print(f"| {label(v)} | {', '.join(map(str, complete))} | " +
              ", ".join(f"{m:.4f}" for m in means) + f" | **{mean:.4f}** | {sd} | {change} |")

    per_class = {(v, c): [seeds[c] for seeds in runs[v].values() if c in seeds] for v in order for c in classes}
    most = max(len(values) for values in per_class.values())
    print(f"\nPer class, mean over the seeds that ran it ((n): only n of {most} seeds ran):\n")
    print("| class | " + " | ".join(label(v) for v in order) + " |")
    print("|---" * (len(order) + 1) + "|")
    for c in classes:
        cells = []
        for v in order:
            values = per_class[(v, c)]
            count = f" ({len(values)})" if values and len(values) < most else ""
            cells.append(f"{statistics.mean(values):.4f}{count}" if values else "-")
        print(f"| {name(c)} | " + " | ".join(cells) + " |")
    print(f"\n{key}; {len(classes)} classes")


# ---- --table orientation-check --------------------------------------------------------------

def orientation_check_table(paths):
    rows = []
    required_t = None
    for path in paths:
        with open(path) as f:
            results = json.load(f)
        if not results:
            continue
        first = results[0]
        if required_t is None:
            required_t = first["orientation_check"]["required_t"]
        name = os.path.basename(path).removesuffix(".json")
        cells = {}
        for r in results:
            c = r["orientation_check"]
            if not c["checked"]:
                cells[r["class"]] = "not checked"
            else:
                cells[r["class"]] = "%.2f (%s)" % (c["t"], "kept" if c["oriented"] else "**fell back**")
        counts = [r["validation_images"] for r in results]
        held_out = str(min(counts)) if min(counts) == max(counts) else "%d-%d" % (min(counts), max(counts))
        rows.append((name, first["seed"], held_out, cells))
    classes = sorted({c for _, _, _, cells in rows for c in cells})
    print("| run | seed | held-out images | " + " | ".join(str(c) for c in classes) + " |")
    print("|---|---|---|" + "---|" * len(classes))
    for name, seed, held_out, cells in rows:
        print("| %s | %d | %s | " % (name, seed, held_out) + " | ".join(cells.get(c, "-") for c in classes) + " |")
    if required_t is not None:
        print("\nt: the mean margin over its standard error (orientation_check.hpp); needed: %.1f" % required_t)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Each table is described at the top of " + __file__ + ".")
    parser.add_argument("--table", choices=["classes", "techniques", "orientation-check"], default="classes")
    parser.add_argument("--key", default="auroc_eval_mode",
                        help="the record field to tabulate (classes, techniques; default: %(default)s)")
    parser.add_argument("files", nargs="+", metavar="FILE.json")
    args = parser.parse_args()
    if args.table == "classes":
        classes_table(args.files, args.key)
    elif args.table == "techniques":
        techniques_table(args.files, args.key)
    else:
        orientation_check_table(args.files)


if __name__ == "__main__":
    main()
