#!/usr/bin/env python3
"""Writes tests/fixtures/metrics.json: scikit-learn's values on fixed data with ties.

For each case: roc_auc_score, average_precision_score, roc_curve (drop_intermediate=False),
and F1-max from precision_recall_curve as anomalib computes it (argmax of 2PR/(P+R) over the
ascending thresholds, so among equal F1 the lowest threshold). Scores are float32 values so
the C++ side sees exactly the numbers scikit-learn ranked.

Run with the system Python (scikit-learn, NumPy):  /usr/bin/python3 scripts/make_metric_fixtures.py
"""
from fractions import Fraction
import json
import os

import numpy as np
import sklearn
from sklearn.metrics import (average_precision_score, precision_recall_curve, roc_auc_score,
                             roc_curve)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "metrics.json")


def exact_f1_max(scores, labels):
    """Best F1 (exact fractions) and the lowest threshold reaching it."""
    positives = int(labels.sum())
    best, best_threshold = Fraction(-1), None
    for t in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= t
        tp = int((predicted & (labels == 1)).sum())
        fp = int((predicted & (labels == 0)).sum())
        f1 = Fraction(2 * tp, tp + fp + positives)
        if f1 >= best:
            best, best_threshold = f1, t
    return best, best_threshold


def case(name, scores, labels):
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = f1[:-1]  # the final (P=1, R=0) point has no threshold
    best = int(np.argmax(f1))
    exact, exact_threshold = exact_f1_max(scores, labels)
    assert abs(float(exact) - f1[best]) < 1e-12, name
    assert float(thresholds[best]) == exact_threshold, (name, thresholds[best], exact_threshold)
    fpr, tpr, roc_thresholds = roc_curve(labels, scores, drop_intermediate=False)
    return {
        "name": name,
        "scores": [float(s) for s in scores],
        "labels": labels.tolist(),
        "roc_auc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "f1_max": float(f1[best]),
        "f1_threshold": float(thresholds[best]),
        # roc_curve's first threshold is an artificial "max + 1" (or inf); the C++ side
        # uses +inf, so only thresholds[1:] are comparable.
        "roc_fpr": fpr.tolist(),
        "roc_tpr": tpr.tolist(),
        "roc_thresholds": [float(t) for t in roc_thresholds[1:]],
    }


def main():
    rng = np.random.default_rng(7)
    cases = []
    # Many ties: scores on a coarse grid, classes overlapping.
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)
    cases.append(case("coarse_ties_60", scores, labels))
    # Heavy ties: five score values only, imbalanced classes.
    labels = (rng.random(80) < 0.2).astype(int)
    scores = rng.integers(0, 5, 80) + labels
    cases.append(case("five_values_80", scores, labels))
    # All distinct scores.
    labels = rng.integers(0, 2, 40)
    scores = rng.normal(labels * 1.5, 1.0)
    cases.append(case("distinct_40", scores, labels))
    # Scores that are exactly tied across classes in whole groups.
    cases.append(case("tied_groups_10", [0.1, 0.1, 0.4, 0.4, 0.35, 0.8, 0.8, 0.8, 0.2, 0.9],
                      [0, 1, 0, 1, 1, 1, 0, 1, 0, 0]))
    # Perfect and inverted separation.
    cases.append(case("perfect_6", [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0, 0, 0, 1, 1, 1]))
    cases.append(case("inverted_6", [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [0, 0, 0, 1, 1, 1]))
    with open(OUT, "w") as f:
        json.dump({"generator": "scripts/make_metric_fixtures.py", "sklearn": sklearn.__version__,
                   "cases": cases}, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
