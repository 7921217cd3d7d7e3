#!/usr/bin/env python3
"""Other scores from the same trained robust model: which part of it carries the signal?

For a model saved by `eval_one_class --save-models` (robust recipe), recomputes with the
official modules (tests/fixtures/make_fixtures.py, eval-mode batch norm) each test image's parts for
the four scoring views (the input rotated by 0-3 quarter turns, greyed in colour) and prints
the AUROC of label-free scores built from them (docs/technical-report.md, "A
discriminator that predicts rotations"):
  robust            the recipe's score: mean over views of 0.9 x reconstruction + 0.1 x latent
  reconstruction    mean over views of the squared reconstruction error alone
  latent            ... of the latent error alone (D's last feature map, nz values)
  d_layer1..3       ... of the squared distance of D's activations after its 1st-3rd layer
  upright_view      the robust score of view 0 only (greyed, not rotated)
  rotated_views     the robust score of views 1-3 only
  standardised      reconstruction and latent each standardised by mean and standard deviation
                    over the last 10% of the training images (seen in training), then summed
Test labels serve only the printed AUROCs.

    /usr/bin/python3 dev/score_variants.py --data runs/data --dataset mnist runs/models/class2_seed0.safetensors
"""
import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from prototype_rotation_head import grey, load_networks, read_dump, roc_auc, use_fast_conv_transpose  # noqa: E402


def parts(torch, netg, netd, images):
    """(N, 4) arrays of each part per view."""
    def layers(x):
        out, h = [], x
        for module in netd.feat.children():
            h = module(h)
            if isinstance(module, torch.nn.LeakyReLU):
                out.append(h.clone())
        return out + [h]
    names = ["reconstruction", "d_layer1", "d_layer2", "d_layer3", "latent"]
    result = {k: [] for k in names}
    with torch.no_grad():
        for first in range(0, len(images), 250):
            x = images[first:first + 250]
            real = layers(x)
            per_view = {k: [] for k in names}
            for k in range(4):
                x_hat = netg(grey(torch, torch.rot90(x, k, dims=(2, 3))).contiguous())
                fake = layers(x_hat)
                per_view["reconstruction"].append(((x - x_hat) ** 2).mean((1, 2, 3)))
                for name, a, b in zip(names[1:], real, fake):
                    per_view[name].append(((a - b) ** 2).flatten(1).mean(1))
            for name in names:
                result[name].append(torch.stack(per_view[name], 1).numpy())
    return {k: np.concatenate(v) for k, v in result.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder written by eval_one_class --dump-data")
    parser.add_argument("--dataset", choices=["mnist", "cifar10"], required=True)
    parser.add_argument("models", nargs="+", help="class<C>_seed<S>.safetensors files")
    args = parser.parse_args()

    import torch
    import make_fixtures as mf
    torch.set_num_threads(1)
    use_fast_conv_transpose(torch)
    for path in args.models:
        normal_class = int(re.search(r"class(\d+)", os.path.basename(path)).group(1))
        train, test, labels = read_dump(torch, args.data, args.dataset, normal_class)
        netg, netd = load_networks(torch, mf, path)
        p = parts(torch, netg, netd, test)
        n = parts(torch, netg, netd, train[-max(1, len(train) // 10):])
        robust = 0.9 * p["reconstruction"] + 0.1 * p["latent"]

        def standardised(name):
            return (p[name].mean(1) - n[name].mean(1).mean()) / n[name].mean(1).std()
        result = {"model": os.path.basename(path), "class": normal_class, "robust": roc_auc(robust.mean(1), labels)}
        for name in ["reconstruction", "latent", "d_layer1", "d_layer2", "d_layer3"]:
            result[name] = roc_auc(p[name].mean(1), labels)
        result["upright_view"] = roc_auc(robust[:, 0], labels)
        result["rotated_views"] = roc_auc(robust[:, 1:].mean(1), labels)
        result["standardised"] = roc_auc(standardised("reconstruction") + standardised("latent"), labels)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)


if __name__ == "__main__":
    main()
