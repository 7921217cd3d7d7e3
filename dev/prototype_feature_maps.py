#!/usr/bin/env python3
"""Prototype (PyTorch, CPU): anomaly maps from a trained tiled inspection model, beyond |x - G(x)|.

For models saved by eval/industrial/run_tiled.sh (tiles of 64 px every 32, network input 32),
recomputes with the official modules each tile's input x, reconstruction G(x) and the
discriminator's activations, stitches per-tile maps into a map of the 128 px image (average
where tiles overlap, as tiling.hpp does), smooths it, and scores an image by the map's maximum.
Candidate maps:
  l1           channel mean of |x - G(x)| (the inspection recipe's map)
  gauss_dK     Mahalanobis distance of the discriminator's layer-K activations of x to one
               Gaussian fitted over every location of the training tiles (PaDiM-style, shared
               over locations: the tiles of a texture have no fixed place)
  gauss_d12    the same on layer 1 and layer 2 (upsampled) together
  fdiff_dK     squared distance of layer-K activations of x and G(x)
  signed_sK    |G_K * (x - G(x))|: the signed error smoothed (sigma K image pixels), then its
               absolute value; a stain shifts the error one way over a region, noise does not
  sum_*, max_* maps standardised by their mean and sd over 20 training images' maps, summed or
               their maximum; plain_*: summed as they are
  cond_div     l1 divided by a + b x (smoothed gradient magnitude of x), a and b fitted by least
               squares to the training images' maps: the error normal texture makes where the
               surface is that busy; cond_sub: l1 less it
--cheap computes only the maps that need no feature Gaussian; --only names the maps to report.
Results: results/2026-12-07-industrial-levers. Test labels serve only the printed metrics.
Needs Debian's python3-torch; not part of CI.

    /usr/bin/python3 dev/prototype_feature_maps.py --data data/industrial runs/tiled/wood_seed0.safetensors
"""
import argparse
import glob
import json
import os
import re
import sys

import numpy as np
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "tests", "fixtures"))
sys.path.insert(0, os.path.join(here, "..", "python", "interop"))
from prototype_rotation_head import load_networks, roc_auc  # noqa: E402

TILE, STRIDE, SIZE = 64, 32, 32


def read_grey(path):
    return np.asarray(Image.open(path).convert("L"))


def tiles_of(image):
    """(tiles, windows): each 64 px tile resized to the network's 32 px with Pillow's bilinear
    filter (as the library's preprocess), scaled to [-1, 1]."""
    h, w = image.shape
    starts = lambda n: sorted(set(list(range(0, n - TILE, STRIDE)) + [n - TILE]))
    out, windows = [], []
    for y in starts(h):
        for x in starts(w):
            t = Image.fromarray(image[y:y + TILE, x:x + TILE]).resize((SIZE, SIZE), Image.BILINEAR)
            out.append((np.asarray(t, np.float32) / 255.0 - 0.5) / 0.5)
            windows.append((y, x))
    return np.stack(out)[:, None], windows


def stitch(tile_maps, windows, shape):
    """Average the tiles' maps (each upsampled to 64 px) where they overlap."""
    import torch
    up = torch.nn.functional.interpolate(torch.from_numpy(tile_maps)[:, None], size=(TILE, TILE), mode="bilinear",
                                         align_corners=False)[:, 0].numpy()
    total, count = np.zeros(shape, np.float64), np.zeros(shape, np.float64)
    for m, (y, x) in zip(up, windows):
        total[y:y + TILE, x:x + TILE] += m
        count[y:y + TILE, x:x + TILE] += 1
    return total / count


def smooth(m, sigma):
    from scipy import ndimage
    return ndimage.gaussian_filter(m, sigma, mode="reflect")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="benchmark root (data/industrial)")
    parser.add_argument("--sigma", type=float, default=8.0, help="smoothing of the stitched map, image pixels")
    parser.add_argument("--cheap", action="store_true", help="residual maps only (no feature Gaussians)")
    parser.add_argument("--only", default="", help="comma-separated map names to report (default: all)")
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()

    import torch
    import make_fixtures as mf
    from make_metric_fixtures import aupro
    from sklearn.metrics import roc_auc_score
    torch.set_num_threads(1)

    for path in args.models:
        category, seed = re.match(r"(\w+?)_seed(\d+)", os.path.basename(path)).groups()
        root = os.path.join(args.data, category)
        netg, netd = load_networks(torch, mf, path)
        layers = [m for m in netd.features.children()] if hasattr(netd, "features") else list(netd.feat.children())

        def parts(tiles):
            x = torch.from_numpy(tiles)
            with torch.no_grad():
                xh = netg(x)
                acts, acts_h, h, hh = [], [], x, xh
                for module in layers:
                    h, hh = module(h), module(hh)
                    if isinstance(module, torch.nn.LeakyReLU):
                        acts.append(h)
                        acts_h.append(hh)
            return x, xh, acts, acts_h

        def features(acts, names):
            """(N, C, 16, 16) of the chosen layers, the deeper ones upsampled to layer 1's grid."""
            picked = []
            for k in names:
                a = acts[k - 1]
                if a.shape[-1] != acts[0].shape[-1]:
                    a = torch.nn.functional.interpolate(a, size=acts[0].shape[-2:], mode="bilinear", align_corners=False)
                picked.append(a)
            return torch.cat(picked, 1)

        feature_sets = {} if args.cheap else {"d1": [1], "d2": [2], "d12": [1, 2], "d123": [1, 2, 3]}
        # Fit the Gaussians on every training tile.
        train_paths = sorted(glob.glob(os.path.join(root, "train", "good", "*.png")))
        train_tiles, train_windows = [], []
        for p in train_paths:
            t, w = tiles_of(read_grey(p))
            train_tiles.append(t)
            train_windows.append(w)
        all_tiles = np.concatenate(train_tiles)
        gauss = {}
        acts_train = None
        x, xh, acts, acts_h = parts(all_tiles) if feature_sets else (None, None, None, None)
        for name, ks in feature_sets.items():
            f = features(acts, ks).permute(0, 2, 3, 1).reshape(-1, sum(acts[k - 1].shape[1] for k in ks)).double().numpy()
            mean = f.mean(0)
            cov = np.cov(f, rowvar=False) + 0.01 * np.eye(f.shape[1])
            gauss[name] = (mean, np.linalg.inv(cov))

        def tile_maps(tiles):
            x, xh, acts, acts_h = parts(tiles)
            maps = {"l1": (x - xh).abs().mean(1).numpy(), "signed": (x - xh).mean(1).numpy()}
            for name, ks in feature_sets.items():
                f = features(acts, ks).permute(0, 2, 3, 1).double().numpy()
                mean, inv = gauss[name]
                d = f - mean
                maps["gauss_" + name] = np.sqrt(np.einsum("nhwc,cd,nhwd->nhw", d, inv, d)).astype(np.float32)
            for k in ((1, 2) if feature_sets else ()):
                maps["fdiff_d%d" % k] = ((acts[k - 1] - acts_h[k - 1]) ** 2).mean(1).numpy()
            return maps

        def image_maps(image):
            t, w = tiles_of(image)
            m = {k: stitch(v, w, image.shape) for k, v in tile_maps(t).items()}
            out = {"l1": smooth(m["l1"], args.sigma)}
            gy, gx = np.gradient(image.astype(np.float64) / 127.5)
            out["activity"] = smooth(np.hypot(gx, gy), args.sigma)  # how busy the surface is here
            for s in (2, 4, 8):
                out["signed_s%d" % s] = np.abs(smooth(m["signed"], s))
            for k, v in m.items():
                if k not in ("l1", "signed"):
                    out[k] = smooth(v, args.sigma)
            return out

        # Standardisation statistics from the last 20 training images (as fit's held-out ones).
        normal_maps = [image_maps(read_grey(p)) for p in train_paths[-20:]]
        stats = {k: (np.mean([m[k] for m in normal_maps]), np.std([m[k] for m in normal_maps])) for k in normal_maps[0]}
        # The error normal texture makes where it is this busy: l1 ~ a + b x activity, least squares.
        act = np.concatenate([m["activity"].ravel() for m in normal_maps])
        err = np.concatenate([m["l1"].ravel() for m in normal_maps])
        b_fit, a_fit = np.polyfit(act, err, 1)
        resid = err - (a_fit + b_fit * act)
        resid_sd = resid.std()

        test_paths = sorted(glob.glob(os.path.join(root, "test", "*", "*.png")))
        results = {}
        labels, types, masks, all_maps = [], [], [], []
        for p in test_paths:
            kind = os.path.basename(os.path.dirname(p))
            image = read_grey(p)
            m = image_maps(image)
            z = lambda a: (m[a] - stats[a][0]) / stats[a][1]
            expected = np.maximum(a_fit + b_fit * m["activity"], 1e-3)
            m["cond_sub"] = m["l1"] - expected
            m["cond_div"] = m["l1"] / expected
            for a in [k for k in ("gauss_d1", "gauss_d12", "gauss_d123", "fdiff_d1") if k in m]:
                m["sum_l1_" + a] = z("l1") + z(a)
            for s in (2, 4, 8):
                m["sum_l1_signed_s%d" % s] = z("l1") + z("signed_s%d" % s)
                m["max_l1_signed_s%d" % s] = np.maximum(z("l1"), z("signed_s%d" % s))
                m["plain_l1_signed_s%d" % s] = m["l1"] + m["signed_s%d" % s]  # same units: no statistics
            all_maps.append(m)
            labels.append(0 if kind == "good" else 1)
            types.append(kind)
            if kind == "good":
                masks.append(np.zeros(image.shape, np.uint8))
            else:
                mp = os.path.join(root, "ground_truth", kind, os.path.basename(p)[:-4] + "_mask.png")
                masks.append((read_grey(mp) > 0).astype(np.uint8))
        labels = np.array(labels)
        flat_masks = np.concatenate([m.ravel() for m in masks])
        only = set(filter(None, args.only.split(",")))
        for name in [k for k in all_maps[0] if k != "activity" and (not only or k in only)]:
            maps = [m[name] for m in all_maps]
            scores = np.array([mm.max() for mm in maps])
            per_type = {}
            for t in sorted(set(types) - {"good"}):
                keep = np.array([tt in (t, "good") for tt in types])
                per_type[t] = round(roc_auc(scores[keep], labels[keep]), 3)
            results[name] = {"image_auroc": round(roc_auc(scores, labels), 4),
                             "pixel_auroc": round(float(roc_auc_score(flat_masks, np.concatenate([mm.ravel() for mm in maps]))), 4),
                             "aupro": round(aupro([mm.astype(np.float32) for mm in maps], masks, 0.3), 4),
                             "per_type": per_type}
        print(json.dumps({"category": category, "seed": int(seed), "sigma": args.sigma, "maps": results}), flush=True)


if __name__ == "__main__":
    main()
