#!/usr/bin/env python3
"""The MNIST one-class protocol of eval_one_class --recipe official, run in PyTorch with the
official modules (docs/technical-report.md, "Digit 8 against PyTorch").

It answers one question: is a digit's AUROC in our runs what PyTorch itself gives with the same
recipe, or is there a difference of function? The networks, initialisation and training step are
those of tests/fixtures/make_fixtures.py (the official UnetGenerator / NetDv2,
init_weights('normal'), OfficialTraining: optimize_params with PyTorch 1.2's D update), which the
parity tests pin our C++ to for one step and for six consecutive steps; this script runs them
for the whole recipe: train on the training images of one digit (batch 64,
shuffled, last partial batch dropped, Adam 2e-4 (0.5, 0.999), w_adv 1, w_con 50, w_lat 1,
15 epochs), test on all test images (anomaly = any other digit), 28x28 -> 32x32 with PIL
bilinear, scaled to [-1, 1]. AUROC after the last epoch (after every epoch with
--every-epoch) with eval-mode scoring (running statistics) and with the official train-mode scoring (batch statistics
of test batches of 64 in file order). The output JSON has the fields of eval_one_class's, so
bench/compare_digit_runs.py and eval/summarize_one_class.py read both.

Debian's PyTorch on the CPU is slow here (about 9 s per training step on one core), so one
digit with 15 epochs takes about 35 minutes (scoring the 1996 test images takes about
as long as an epoch, hence the curve only on request):

  /usr/bin/python3 bench/reference_mnist_pytorch.py --digit 8 --seed 0 --threads 1 --out ref8_seed0.json
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
from make_fixtures import OfficialTraining, init_dcgan, make_networks  # noqa: E402


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def preprocess(images):
    """transforms.Resize(32) on a PIL 'L' image, ToTensor, Normalize((0.5,), (0.5,))."""
    out = np.stack([np.asarray(Image.fromarray(im, mode="L").resize((32, 32), Image.BILINEAR)) for im in images])
    return torch.from_numpy((out.astype(np.float32) / 255.0 - 0.5) / 0.5).unsqueeze(1)


def scores(netg, netd, x, train_mode):
    netg.train(train_mode)
    netd.train(train_mode)
    out = []
    with torch.no_grad():
        for first in range(0, x.shape[0], 64):
            batch = x[first:first + 64]
            fake = netg(batch)
            _, feat_real = netd(batch)
            _, feat_fake = netd(fake)
            rec = (batch - fake).pow(2).flatten(1).mean(1)
            lat = (feat_real - feat_fake).pow(2).flatten(1).mean(1)
            out.append(0.9 * rec + 0.1 * lat)
    return torch.cat(out).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(ROOT, "data", "mnist"))
    parser.add_argument("--digit", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--every-epoch", action="store_true",
                        help="eval-mode AUROC after every epoch (each test pass costs about as much as an epoch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    train_images = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
    train_labels = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))
    test_images = read_idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz"))
    test_labels = read_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz"))
    train = preprocess(train_images[train_labels == args.digit])
    test = preprocess(test_images)
    anomalous = (test_labels != args.digit).astype(np.int64)

    netg, netd = make_networks(isize=32, nc=1, ngf=64, ndf=64, nz=100)
    init_dcgan(netg, generator, perturb_biases=False)
    init_dcgan(netd, generator, perturb_biases=False)
    training = OfficialTraining(netg, netd, reinit_generator=generator)

    curve, epoch_seconds = [], []
    for epoch in range(1, args.epochs + 1):
        start = time.time()
        order = torch.randperm(train.shape[0], generator=generator)
        for first in range(0, train.shape[0] - 63, 64):  # drop_last
            losses, _, _ = training.step(train[order[first:first + 64]])
            err_g, err_d = losses[0].item(), losses[4].item()
        epoch_seconds.append(time.time() - start)
        if args.every_epoch or epoch == args.epochs:
            curve.append(float(roc_auc_score(anomalous, scores(netg, netd, test, train_mode=False))))
        print(f"digit {args.digit} epoch {epoch:2d}: G {err_g:.3f} D {err_d:.3f} "
              f"AUROC(eval) {curve[-1] if curve else float('nan'):.4f} ({epoch_seconds[-1]:.0f} s)", file=sys.stderr, flush=True)
    train_mode = float(roc_auc_score(anomalous, scores(netg, netd, test, train_mode=True)))
    result = [{"digit": args.digit, "training_images": int(train.shape[0]), "epochs": args.epochs,
               "auroc_eval_mode": curve[-1], "auroc_train_mode": train_mode,
               "auroc_eval_mode_per_epoch": curve, "auroc_train_mode_per_epoch": [],
               "discriminator_reinits": training.reinits, "training_seconds": sum(epoch_seconds),
               "implementation": f"PyTorch {torch.__version__} (bench/reference_mnist_pytorch.py)", "seed": args.seed}]
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"digit {args.digit} seed {args.seed}: AUROC eval mode {curve[-1]:.4f}, train mode {train_mode:.4f}")


if __name__ == "__main__":
    main()
