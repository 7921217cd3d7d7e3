#!/usr/bin/env python3
"""Prints the markdown tables of docs/industrial.md from evaluation JSON files.

    /usr/bin/python3 eval/industrial/summarize.py results/<run>/*.json

Two kinds of file are read: eval_industrial's (a list of results, each naming its category,
recipe and seed), and the command-line tool's `eval --json` output saved as
<category>_seed<S>.eval.json (run_tiled.sh), whose recipe is given with --recipe NAME.

One row per (recipe, category) with the mean and standard deviation over the seeds found, a
mean row per recipe, then image AUROC per defect type. Standard library only.
"""
import collections
import json
import os
import statistics
import sys


def fmt(values):
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def from_cli(path, data, recipe):
    """A tool `eval --json` result in eval_industrial's shape."""
    name = os.path.basename(path)[: -len(".eval.json")]
    category, seed = name.rsplit("_seed", 1)
    return {"category": category, "seed": int(seed), "recipe": {"name": recipe},
            "image_auroc": data["auroc"], "pixel_auroc": data["pixel_auroc"], "aupro": data["aupro"],
            "pixel_f1_max": data["pixel_f1_max"], "test_images": data["images"],
            "flagged_anomalies": data["true_positives"], "flagged_normals": data["false_positives"],
            "per_defect_image_auroc": {t["defect_type"]: t["auroc"] for t in data["auroc_per_defect_type"]}}


def main(argv):
    recipe = "inspection"
    if len(argv) >= 2 and argv[0] == "--recipe":
        recipe, argv = argv[1], argv[2:]
    runs = collections.defaultdict(list)  # (recipe, category) -> [result]
    for path in argv:
        with open(path) as f:
            data = json.load(f)
        for r in data if isinstance(data, list) else [from_cli(path, data, recipe)]:
            runs[(r["recipe"]["name"], r["category"])].append(r)
    recipes = sorted({k[0] for k in runs})
    print("| recipe | category | seeds | image AUROC | pixel AUROC | AUPRO | pixel F1-max | flagged defective / flagged normal, per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for recipe in recipes:
        means = collections.defaultdict(list)
        for (name, category), results in sorted(runs.items()):
            if name != recipe:
                continue
            row = {key: [r[key] for r in results] for key in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_max")}
            for key, values in row.items():
                means[key].append(statistics.mean(values))
            flagged = ("/".join(str(r["flagged_anomalies"]) for r in results) + " / " +
                       "/".join(str(r["flagged_normals"]) for r in results))
            seeds = ",".join(str(r["seed"]) for r in results)
            print(f"| {recipe} | {category} | {seeds} | {fmt(row['image_auroc'])} | {fmt(row['pixel_auroc'])} | "
                  f"{fmt(row['aupro'])} | {fmt(row['pixel_f1_max'])} | {flagged} |")
        n = len(means["image_auroc"])
        print(f"| {recipe} | **mean of {n}** | | {statistics.mean(means['image_auroc']):.3f} | "
              f"{statistics.mean(means['pixel_auroc']):.3f} | {statistics.mean(means['aupro']):.3f} | "
              f"{statistics.mean(means['pixel_f1_max']):.3f} | |")
    print()
    print("| recipe | category | image AUROC per defect type |")
    print("|---|---|---|")
    for (name, category), results in sorted(runs.items()):
        types = results[0]["per_defect_image_auroc"]
        cells = ", ".join(f"{t} {fmt([r['per_defect_image_auroc'][t] for r in results])}" for t in sorted(types))
        print(f"| {name} | {category} | {cells} |")


if __name__ == "__main__":
    main(sys.argv[1:])
