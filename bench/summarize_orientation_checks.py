#!/usr/bin/env python3
"""Tables of the orientation check's decisions (orientation_check.hpp) from the JSON files
that `eval_one_class --check-only` writes: one row per file (data set, seed), one column per
class, each cell "t (kept)" or "t (fell back)". Plain Python, no dependencies.

    python3 bench/summarize_orientation_checks.py results/2026-12-02-orientation-check/*.json
"""
import json
import sys


def main(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            results = json.load(f)
        if not results:
            continue
        first = results[0]
        name = path.rsplit("/", 1)[-1].removesuffix(".json")
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
    print("\nt: the mean margin over its standard error (orientation_check.hpp); needed: %.1f" %
          json.load(open(paths[0]))[0]["orientation_check"]["required_t"])


if __name__ == "__main__":
    main(sys.argv[1:])
