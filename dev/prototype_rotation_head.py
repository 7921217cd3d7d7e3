#!/usr/bin/env python3
"""Prototype (PyTorch, CPU): does a discriminator that predicts rotations detect anomalies?

Measures the next candidate technique for the robust recipe (docs/technical-report.md, "A
discriminator that predicts rotations") before it is built into the library: Skip-GANomaly's
discriminator body (the official NetD feature layers, tests/fixtures/make_fixtures.py) with a linear
head nz -> 4 is trained, alone and not adversarially, to tell which quarter turn an image of
the normal class was given (the auxiliary task of SS-GAN, Chen et al. CVPR 2019; as an anomaly
score, Golan & El-Yaniv 2018 and Hendrycks et al. 2019). Colour images are greyed first, as
the robust recipe's generator inputs are. Adam 2e-4 (0.5, 0.999), batch 64, DCGAN
initialisation, one random quarter turn per image and step.

Score of an image: the cross-entropy of the true quarter turn, summed over its four turns.
With --robust-model (a model saved by `eval_one_class --save-models` for the same class), the
script also computes that model's robust score (the mean over the four views of 0.9 x
reconstruction + 0.1 x latent, eval-mode batch norm: the same AUROC as eval_one_class) and
their combination: each score standardised by its mean and standard deviation over the last
10% of the normal training images, which the rotation classifier never sees (the robust model,
trained on every training image by eval_one_class, has seen them), then
(1 - w) x robust + w x rotation. No test label is used for anything but the printed AUROCs.

    build/eval/eval_one_class --dataset cifar10 --classes 3 --dump-data runs/data
    /usr/bin/python3 dev/prototype_rotation_head.py --data runs/data --dataset cifar10 --class 3 \\
        --steps 1170 --robust-model runs/models/class3_seed1.safetensors

Prints one JSON line. Needs Debian's python3-torch (/usr/bin/python3); not part of CI.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "interop"))


def roc_auc(scores, labels):
    """AUROC with anomalies (label 1) as the positive class; ties count one half."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j + 2) / 2.0
        i = j + 1
    positive = labels == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def use_fast_conv_transpose(torch):
    """Debian's ConvTranspose2d runs on the reference BLAS; conv2d_input is the same arithmetic on oneDNN."""
    def forward(self, x, output_size=None):
        n, _, h, w = x.shape
        s, p, k = self.stride, self.padding, self.kernel_size
        size = (n, self.out_channels, (h - 1) * s[0] - 2 * p[0] + k[0], (w - 1) * s[1] - 2 * p[1] + k[1])
        y = torch.nn.grad.conv2d_input(size, self.weight, x, stride=s, padding=p)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
    torch.nn.ConvTranspose2d.forward = forward


def grey(torch, x):
    if x.shape[1] == 1:
        return x
    g = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return g.unsqueeze(1).repeat(1, 3, 1, 1)


def rotation_classifier(torch, mf, channels, steps, seed, train):
    torch.manual_seed(seed)
    _, netd = mf.make_networks(32, channels, 64, 64, 100)
    for m in netd.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(m.weight, 1.0, 0.02)
            torch.nn.init.zeros_(m.bias)
    head = torch.nn.Linear(100, 4)
    optimizer = torch.optim.Adam(list(netd.feat.parameters()) + list(head.parameters()), lr=2e-4, betas=(0.5, 0.999))

    def logits(x):
        return head(netd.feat(grey(torch, x)).flatten(1))

    for _ in range(steps):
        batch = train[torch.randint(0, len(train), (64,))]
        turns = torch.randint(0, 4, (64,))
        rotated = torch.stack([torch.rot90(batch[i], int(turns[i]), dims=(1, 2)) for i in range(64)])
        loss = torch.nn.functional.cross_entropy(logits(rotated), turns)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    netd.eval()

    def score(images):
        out = []
        with torch.no_grad():
            for first in range(0, len(images), 500):
                x = images[first:first + 500]
                total = torch.zeros(len(x))
                for k in range(4):
                    total -= torch.log_softmax(logits(torch.rot90(x, k, dims=(2, 3))), 1)[:, k]
                out.append(total)
        return torch.cat(out).numpy()
    return score, float(loss)


def read_dump(torch, data, dataset, normal_class):
    """(training images, test images, test labels) from `eval_one_class --dump-data`."""
    channels = 3 if dataset == "cifar10" else 1
    stem = os.path.join(data, dataset)

    def read(path):
        return torch.from_numpy(np.fromfile(path, np.float32).reshape(-1, channels, 32, 32))
    with open(f"{stem}_class{normal_class}_test_labels.json") as f:
        labels = np.array(json.load(f))
    return read(f"{stem}_class{normal_class}_train.f32"), read(f"{stem}_test.f32"), labels


def load_networks(torch, mf, path):
    """A saved model's generator and discriminator as the official modules, in eval mode."""
    import skipganomaly_model as sm
    model = sm.read_model(path)
    a = model.architecture
    netg, netd = mf.make_networks(a["image_size"], a["channels"], a["generator_features"],
                                  a["discriminator_features"], a["latent_size"])
    netg.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict("netg").items()})
    netd.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict("netd").items()})
    netg.eval()
    netd.eval()
    return netg, netd


def robust_scorer(torch, mf, path):
    """The robust recipe's score of a saved model, recomputed with the official modules."""
    netg, netd = load_networks(torch, mf, path)

    def score(images):
        out = []
        with torch.no_grad():
            for first in range(0, len(images), 250):
                x = images[first:first + 250]
                _, f_real = netd(x)
                total = torch.zeros(len(x))
                for k in range(4):
                    x_hat = netg(grey(torch, torch.rot90(x, k, dims=(2, 3))).contiguous())
                    _, f_fake = netd(x_hat)
                    total += 0.9 * ((x - x_hat) ** 2).mean((1, 2, 3)) + 0.1 * ((f_real - f_fake) ** 2).flatten(1).mean(1)
                out.append(total / 4)
        return torch.cat(out).numpy()
    return score


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder written by eval_one_class --dump-data")
    parser.add_argument("--dataset", choices=["mnist", "cifar10"], required=True)
    parser.add_argument("--class", dest="normal_class", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True, help="Adam steps (the robust recipe's fit: 15 epochs of batch 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--robust-model", help="a robust model of the same class, to combine with")
    parser.add_argument("--weight", type=float, default=0.5, help="w, the rotation score's share of the combination")
    args = parser.parse_args()

    import torch
    import make_fixtures as mf
    torch.set_num_threads(1)
    use_fast_conv_transpose(torch)
    channels = 3 if args.dataset == "cifar10" else 1
    images, test, labels = read_dump(torch, args.data, args.dataset, args.normal_class)
    held = max(1, len(images) // 10)
    train, held_out = images[:-held], images[-held:]

    start = time.time()
    score, last_loss = rotation_classifier(torch, mf, channels, args.steps, args.seed, train)
    rotation_test, rotation_held = score(test), score(held_out)
    result = {"dataset": args.dataset, "class": args.normal_class, "seed": args.seed, "steps": args.steps,
              "training_images": len(train), "held_out_images": held, "last_loss": round(last_loss, 4),
              "auroc_rotation": roc_auc(rotation_test, labels)}
    if args.robust_model:
        robust = robust_scorer(torch, mf, args.robust_model)
        robust_test, robust_held = robust(test), robust(held_out)

        def standardised(values, normal):
            return (values - normal.mean()) / normal.std()
        combined = ((1 - args.weight) * standardised(robust_test, robust_held) +
                    args.weight * standardised(rotation_test, rotation_held))
        result.update({"robust_model": os.path.basename(args.robust_model), "auroc_robust": roc_auc(robust_test, labels),
                       "weight": args.weight, "auroc_combined": roc_auc(combined, labels)})
    result["seconds"] = round(time.time() - start, 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
