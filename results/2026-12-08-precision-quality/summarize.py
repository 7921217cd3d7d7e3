"""The precision-quality table of docs/quality.md from eval_precision JSON outputs.

    python3 summarize.py FLOAT32_TRAINED.json[,MORE.json] [BFLOAT16_TRAINED.json[,MORE.json]]

Each argument: the eval_precision outputs (their "runs" merged) of models trained in one
precision; eval_precision scored every model in float32 and in bfloat16. Prints one row per
(training, scoring) precision: the mean AUROC over the classes for each seed, its mean and sample
standard deviation over seeds, the difference from float32 training and scoring, whether that
difference is within one seed standard deviation of float32's, and for bfloat16 scoring the
largest score differences against float32 scoring of the same model and the agreement of the
anomaly decision at the stored threshold."""
import json
import statistics
import sys


def load(paths):
    runs = []
    for path in paths.split(","):
        runs += json.load(open(path))["runs"]
    return runs


def seed_means(runs, key):
    seeds = sorted({r["seed"] for r in runs})
    return [statistics.mean(r["auroc"][key] for r in runs if r["seed"] == s) for s in seeds]


groups = [("float32", load(sys.argv[1]))]
if len(sys.argv) > 2:
    groups.append(("bfloat16", load(sys.argv[2])))
reference = seed_means(groups[0][1], "float32")
ref_mean, ref_sd = statistics.mean(reference), statistics.stdev(reference) if len(reference) > 1 else float("nan")
print("| training | scoring | classes x seeds | mean AUROC | sd over seeds | difference | within one float32 sd | "
      "largest reconstruction-error difference (relative) | largest score difference (of the normal range) | "
      "decisions agreeing, mean (lowest) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for training, runs in groups:
    seeds = sorted({r["seed"] for r in runs})
    classes = sorted({r["class"] for r in runs})
    for scoring in ("float32", "bfloat16"):
        m = seed_means(runs, scoring)
        mean, sd = statistics.mean(m), statistics.stdev(m) if len(m) > 1 else float("nan")
        if scoring == "float32":
            extra = "- | - | -"
        else:
            largest = max(r["largest_reconstruction_relative_difference"][scoring] for r in runs)
            of_range = max(r["largest_score_difference_of_normal_range"][scoring] for r in runs)
            agree = [r["agreement"][scoring] for r in runs]
            extra = f"{largest:.2e} | {of_range:.2e} | {statistics.mean(agree):.4f} ({min(agree):.4f})"
        diff = mean - ref_mean
        print(f"| {training} | {scoring} | {len(classes)} x {len(seeds)} | {mean:.4f} | {sd:.4f} | {diff:+.4f} | "
              f"{'yes' if abs(diff) <= ref_sd else 'no'} | {extra} |")
for training, runs in groups:
    for scoring in ("float32", "bfloat16"):
        print(f"per seed, {training} training, {scoring} scoring:", [round(x, 4) for x in seed_means(runs, scoring)])
