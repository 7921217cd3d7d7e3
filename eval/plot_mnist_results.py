#!/usr/bin/python3
"""The per-digit table and the AUROC-per-epoch picture of the official recipe on MNIST
(docs/technical-report.md, "The official recipe on MNIST"; results/2026-11-28-mnist-official/),
from one eval_one_class --out file run with --train-mode-every-epoch. The picture needs
matplotlib; the table, nothing but python3.

    /usr/bin/python3 eval/plot_mnist_results.py results/2026-11-28-mnist-official/mnist_results.json \
        --png results/2026-11-28-mnist-official/mnist_auroc_per_epoch.png
"""
import argparse
import json

# A PyTorch re-implementation of the official recipe on the same split, seed 0, after 15 epochs.
REFERENCE = {0: (0.59, 0.79), 1: (0.997, 0.996), 8: (0.55, 0.62)}  # digit: (train-mode, eval-mode)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--png")
    args = parser.parse_args()
    with open(args.results) as f:
        results = json.load(f)

    print("| digit | training images | AUROC, eval mode (ours) | AUROC, train mode (ours) | reference eval / train | best eval-mode epoch (peeking) | best train-mode epoch (peeking) | training time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    peaks = []
    for r in results:
        curve = r["auroc_eval_mode_per_epoch"]
        best = max(range(len(curve)), key=curve.__getitem__)
        train_curve = r["auroc_train_mode_per_epoch"] or [r["auroc_train_mode"]]
        train_best = max(range(len(train_curve)), key=train_curve.__getitem__)
        peaks.append(train_curve[train_best])
        ref = REFERENCE.get(r["digit"])
        ref_text = f"{ref[1]:.3f} / {ref[0]:.3f}" if ref else ""
        print(f"| {r['digit']} | {r['training_images']} | {r['auroc_eval_mode']:.4f} | {r['auroc_train_mode']:.4f} | "
              f"{ref_text} | {curve[best]:.4f} (epoch {best + 1}) | {train_curve[train_best]:.4f} (epoch {train_best + 1}) | "
              f"{r['training_seconds']:.0f} |")
    n = len(results)
    mean_eval = sum(r["auroc_eval_mode"] for r in results) / n
    mean_train = sum(r["auroc_train_mode"] for r in results) / n
    print(f"| **mean ({n} digits)** | | **{mean_eval:.4f}** | **{mean_train:.4f}** | 0.777 / 0.738 (10 digits) | | "
          f"{sum(peaks) / n:.4f} (reference: 0.898) | |")

    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for r in results:
            for ax, key in zip(axes, ("auroc_eval_mode_per_epoch", "auroc_train_mode_per_epoch")):
                curve = r[key]
                if curve:
                    ax.plot(range(1, len(curve) + 1), curve, marker=".", label=str(r["digit"]))
        axes[0].set_title("eval-mode scoring (running statistics)")
        axes[1].set_title("official train-mode scoring (batch statistics)")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("test AUROC")
        axes[1].legend(title="normal digit", fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
