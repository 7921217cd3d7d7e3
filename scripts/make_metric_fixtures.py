#!/usr/bin/env python3
"""Writes the metric fixtures of tests/test_metrics.cpp.

tests/fixtures/metrics.json: scikit-learn's values on fixed data with ties.

For each case: roc_auc_score, average_precision_score, roc_curve (drop_intermediate=False),
and F1-max from precision_recall_curve as anomalib computes it (argmax of 2PR/(P+R) over the
ascending thresholds, so among equal F1 the lowest threshold). Scores are float32 values so
the C++ side sees exactly the numbers scikit-learn ranked.

tests/fixtures/localisation_metrics.json: random anomaly maps and ground-truth masks (several
images of different sizes, several regions of random shapes per image, normal images, tied
scores) with a NumPy + SciPy reference of MVTec AD's PRO curve and AUPRO (8-connected regions
from scipy.ndimage.label; the trapezoid cut at the integration limit as MVTec AD's
generic_util.trapezoid), pixel F1-max, and the image AUROC of each defect type against the
normal images (roc_auc_score).

Run with the system Python (scikit-learn, NumPy, SciPy):  /usr/bin/python3 scripts/make_metric_fixtures.py
"""
from bisect import bisect
from fractions import Fraction
import json
import os

import numpy as np
import sklearn
from scipy import ndimage
from sklearn.metrics import (average_precision_score, precision_recall_curve, roc_auc_score,
                             roc_curve)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "metrics.json")
LOCALISATION_OUT = os.path.join(ROOT, "tests", "fixtures", "localisation_metrics.json")


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


# ---- localisation --------------------------------------------------------------------------

def pro_curve(maps, masks, fpr_dtype=np.float64):
    """MVTec AD's PRO curve: (fprs, pros), thresholds descending, one point per distinct score,
    (0, 0) first. fpr_dtype=np.float32 rounds the FPRs as MVTec AD's evaluation code does."""
    eight_connected = np.ones((3, 3), dtype=int)
    fp_changes, pro_changes, scores = [], [], []
    regions = 0
    normal_pixels = 0
    for anomaly_map, mask in zip(maps, masks):
        labelled, count = ndimage.label(mask > 0, structure=eight_connected)
        regions += count
        normal = labelled == 0
        normal_pixels += int(normal.sum())
        pro_change = np.zeros(mask.shape, dtype=np.float64)
        for k in range(1, count + 1):
            region = labelled == k
            pro_change[region] = 1.0 / region.sum()
        fp_changes.append(normal.ravel().astype(np.uint32))
        pro_changes.append(pro_change.ravel())
        scores.append(anomaly_map.ravel())
    scores = np.concatenate(scores)
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    fprs = np.cumsum(np.concatenate(fp_changes)[order]).astype(fpr_dtype) / fpr_dtype(normal_pixels)
    pros = np.cumsum(np.concatenate(pro_changes)[order]) / regions
    keep = np.append(np.diff(scores) != 0, True)  # the last point of each tied group
    fprs = np.clip(fprs[keep].astype(np.float64), None, 1.0)
    pros = np.clip(pros[keep], None, 1.0)
    return (np.concatenate(([0.0], fprs)), np.concatenate(([0.0], pros)),
            scores[keep])


def trapezoid(x, y, x_max):
    """The area under y(x) from x[0] to x_max, y interpolated linearly at x_max."""
    correction = 0.0
    if x_max not in x:
        i = bisect(x, x_max)
        assert 0 < i < len(x)
        y_at = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
        correction = 0.5 * (y_at + y[i - 1]) * (x_max - x[i - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def aupro(maps, masks, max_fpr, fpr_dtype=np.float64):
    fprs, pros, _ = pro_curve(maps, masks, fpr_dtype)
    return trapezoid(fprs, pros, max_fpr) / max_fpr


def random_region(rng, height, width):
    """A random shape: a rectangle, an ellipse, or a blob grown by a random walk."""
    shape = np.zeros((height, width), dtype=bool)
    kind = rng.integers(0, 3)
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    if kind == 0:
        h, w = rng.integers(1, 5), rng.integers(1, 6)
        shape[cy:cy + h, cx:cx + w] = True
    elif kind == 1:
        ry, rx = rng.uniform(1, 3.5), rng.uniform(1, 4.5)
        yy, xx = np.mgrid[0:height, 0:width]
        shape[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = True
    else:
        y, x = cy, cx
        for _ in range(rng.integers(3, 25)):
            shape[y, x] = True
            y = int(np.clip(y + rng.integers(-1, 2), 0, height - 1))
            x = int(np.clip(x + rng.integers(-1, 2), 0, width - 1))
    return shape


def localisation_case(name, rng, images, normal_images, quantise):
    maps, masks, widths, heights = [], [], [], []
    for i in range(images):
        height, width = int(rng.integers(12, 24)), int(rng.integers(12, 28))
        mask = np.zeros((height, width), dtype=bool)
        if i >= normal_images:
            for _ in range(rng.integers(2, 6)):
                mask |= random_region(rng, height, width)
        anomaly_map = rng.normal(0.0, 1.0, (height, width)) + 1.2 * mask
        anomaly_map = quantise(anomaly_map).astype(np.float32)
        maps.append(anomaly_map)
        masks.append(mask.astype(np.uint8) * 255)
        widths.append(width)
        heights.append(height)
    labels = np.concatenate([(m > 0).ravel() for m in masks]).astype(int)
    pooled = np.concatenate([m.ravel() for m in maps])
    # Pixel F1-max as image F1-max (case() checks precision_recall_curve against exact fractions).
    pixel = case(name + "_pixels", pooled, labels)
    fprs, pros, thresholds = pro_curve(maps, masks)
    result = {
        "name": name,
        "widths": widths,
        "heights": heights,
        "maps": [[float(v) for v in m.ravel()] for m in maps],
        "masks": [[int(v) for v in m.ravel()] for m in masks],
        "regions": int(sum(ndimage.label(m > 0, structure=np.ones((3, 3), dtype=int))[1] for m in masks)),
        "pixel_roc_auc": pixel["roc_auc"],
        "pixel_f1_max": pixel["f1_max"],
        "pixel_f1_threshold": pixel["f1_threshold"],
        "aupro": {},
        "pro_points": len(fprs),  # (0, 0) included
    }
    for max_fpr in (0.3, 0.05, 1.0):
        value = aupro(maps, masks, max_fpr)
        # MVTec AD's code rounds the FPRs to float32: the difference stays far below 1e-4.
        assert abs(aupro(maps, masks, max_fpr, np.float32) - value) < 1e-6, (name, max_fpr)
        result["aupro"][str(max_fpr)] = value
    if len(fprs) <= 400:
        result["pro_fpr"] = fprs.tolist()
        result["pro"] = pros.tolist()
        result["pro_thresholds"] = [float(t) for t in thresholds]
    return result


def defect_type_case(rng):
    types = ["crack", "hole", "scratch", "contamination"]
    count = 60
    labels = (rng.random(count) < 0.6).astype(int)
    defect_types = ["good" if l == 0 else types[rng.integers(0, len(types))] for l in labels]
    shift = {"good": 0.0, "crack": 1.5, "hole": 0.7, "scratch": 0.2, "contamination": -0.3}
    scores = np.round(np.array([rng.normal(shift[t], 1.0) for t in defect_types]), 1).astype(np.float32)
    expected = {}
    for t in sorted(set(defect_types) - {"good"}):
        keep = np.array([d == t or l == 0 for d, l in zip(defect_types, labels)])
        expected[t] = {"anomalous": int(sum(d == t for d in defect_types)),
                       "roc_auc": float(roc_auc_score(labels[keep], scores[keep]))}
    return {"scores": [float(s) for s in scores], "labels": labels.tolist(),
            "defect_types": defect_types, "expected": expected}


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

    rng = np.random.default_rng(2027)
    localisation = [
        # Scores on a grid of 0.1: many ties, within regions and across the classes.
        localisation_case("ties_8_images", rng, 8, 2, lambda m: np.round(m, 1)),
        # Five score levels only: every threshold moves many pixels at once.
        localisation_case("five_levels_6_images", rng, 6, 1, lambda m: np.clip(np.round(m), -2, 2)),
        # All scores distinct (float32 of normal draws).
        localisation_case("distinct_7_images", rng, 7, 2, lambda m: m),
    ]
    with open(LOCALISATION_OUT, "w") as f:
        json.dump({"generator": "scripts/make_metric_fixtures.py", "sklearn": sklearn.__version__,
                   "cases": localisation, "defect_types": defect_type_case(rng)},
                  f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {LOCALISATION_OUT}: {len(localisation)} cases, "
          f"{os.path.getsize(LOCALISATION_OUT)} bytes")


if __name__ == "__main__":
    main()
