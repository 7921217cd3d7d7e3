"""Merge eval_precision JSON outputs (their "runs") and print the summary table as eval_precision does."""
import json, statistics, sys
runs = []
for path in sys.argv[1:]:
    runs += json.load(open(path))["runs"]
seeds = sorted({r["seed"] for r in runs})
keys = ["float32", "bfloat16"]
def seed_means(key):
    return [statistics.mean(r["auroc"][key] for r in runs if r["seed"] == s) for s in seeds]
ref = statistics.mean(seed_means("float32"))
print(f"{len(runs)} runs, seeds {seeds}, classes per seed {[sum(r['seed'] == s for r in runs) for s in seeds]}")
print("| precision | classes x seeds | mean AUROC | sd over seeds | difference from float32 | largest reconstruction-error difference (relative) | largest score difference (of the normal range) | decisions agreeing, mean (lowest) |")
print("|---|---|---|---|---|---|---|---|")
for key in keys:
    m = seed_means(key)
    if key == "float32":
        largest = of_range = 0.0; agree = [1.0]
    else:
        largest = max(r["largest_reconstruction_relative_difference"][key] for r in runs)
        of_range = max(r["largest_score_difference_of_normal_range"][key] for r in runs)
        agree = [r["agreement"][key] for r in runs]
    print(f"| {key} | {len(runs)//len(seeds)} x {len(seeds)} | {statistics.mean(m):.4f} | {statistics.stdev(m):.4f} | "
          f"{statistics.mean(m) - ref:+.4f} | {largest:.2e} | {of_range:.2e} | {statistics.mean(agree):.4f} ({min(agree):.4f}) |")
print("per seed:", {k: [round(x, 4) for x in seed_means(k)] for k in keys})
per_class = {}
for r in runs:
    per_class.setdefault(r["class"], []).append(r["auroc"]["bfloat16"] - r["auroc"]["float32"])
print("bfloat16 - float32 per class (mean over seeds):", {c: round(statistics.mean(v), 5) for c, v in sorted(per_class.items())})
