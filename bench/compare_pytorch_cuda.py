#!/usr/bin/env python3
"""GPU speed side by side: the same Skip-GANomaly in PyTorch (eager, CUDA) and in skipganomaly.

Full size (nc 3, ngf = ndf = 64, nz 100, float32) at isize 32, 128 and 256: one training step
at batch 64 (G and D updates with Adam, the official optimize_params), scoring at batch 64
(throughput) and at batch 1 (latency), eval mode, no gradients. PyTorch runs with TF32 off
(cudnn.allow_tf32 and matmul.allow_tf32 False: skipganomaly uses FP32 FMA math) and
cudnn.benchmark off, deterministic algorithms on, as ours; each time is the median of the
timed repeats after warm-ups, between torch.cuda.synchronize() calls. Ours come from
bench_cuda's BM_TrainStep_Cuda and BM_ScoreBatch_Cuda (CUDA events). Prints a table with the
ratios (PyTorch time / ours: > 1 means we are faster).

    python3 bench/compare_pytorch_cuda.py --bench build/bench/bench_cuda

Exits 0 with a message when PyTorch has no CUDA device (nothing to compare).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))

SIZES = (32, 128, 256)


def pytorch_measurements(repeats, device_name="cuda", sizes=SIZES):
    import torch
    import torch.nn as nn
    import make_fixtures as mf  # the official modules, rebuilt for the parity fixtures

    on_gpu = device_name == "cuda"
    if on_gpu and not torch.cuda.is_available():
        return {"error": "PyTorch sees no CUDA device"}
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    device = torch.device(device_name)
    results = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if on_gpu else "cpu"}
    synchronize = torch.cuda.synchronize if on_gpu else (lambda: None)

    def median_time(fn, n, warmups=3):
        for _ in range(warmups):
            fn()
        synchronize()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    for isize in sizes:
        torch.manual_seed(0)
        netg, netd = mf.make_networks(isize, 3, 64, 64, 100)
        g = torch.Generator().manual_seed(0)
        mf.init_dcgan(netg, g, False)
        mf.init_dcgan(netd, g, False)
        netg, netd = netg.to(device), netd.to(device)
        opt_g = torch.optim.Adam(netg.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(netd.parameters(), lr=2e-4, betas=(0.5, 0.999))
        bce, l1 = nn.BCELoss(), nn.L1Loss()
        x = torch.rand(64, 3, isize, isize, device=device) * 2 - 1
        real = torch.ones(64, device=device)
        fake_label = torch.zeros(64, device=device)

        def train_step():
            # optimize_params: G step on adversarial + 50 L1 + latent L2, then D step on
            # BCE(real, 1) + BCE(G(x) detached, 0) + latent L2, gradients into D only.
            netg.train()
            netd.train()
            fake = netg(x)
            pred_real, feat_real = netd(x)
            pred_fake, feat_fake = netd(fake)
            opt_g.zero_grad()
            err_lat = torch.mean((feat_fake - feat_real) ** 2)
            err_g = bce(pred_fake.view(-1), real) + 50 * l1(fake, x) + err_lat
            err_g.backward(retain_graph=True)
            opt_g.step()
            opt_d.zero_grad()
            pred_fake_d, _ = netd(fake.detach())
            err_d = bce(pred_real.view(-1), real) + bce(pred_fake_d.view(-1), fake_label) + err_lat
            grads = torch.autograd.grad(err_d, list(netd.parameters()), allow_unused=True)
            for p, grad in zip(netd.parameters(), grads):
                p.grad = grad
            opt_d.step()
            return err_g.item(), err_d.item()

        def score(batch):
            netg.eval()
            netd.eval()
            with torch.no_grad():
                fake = netg(batch)
                _, f_real = netd(batch)
                _, f_fake = netd(fake)
                rec = ((batch - fake) ** 2).flatten(1).mean(1)
                lat = ((f_real - f_fake) ** 2).flatten(1).mean(1)
                return (0.9 * rec + 0.1 * lat).cpu()

        results[f"isize{isize}"] = {
            "train_step_s": median_time(train_step, repeats),
            "score64_s": median_time(lambda: score(x), 5 * repeats),
            "score1_s": median_time(lambda: score(x[:1]), 20 * repeats),
        }
        del netg, netd, opt_g, opt_d
        if on_gpu:
            torch.cuda.empty_cache()
    return results


def ours(bench):
    out = subprocess.run([bench, "--benchmark_filter=BM_(TrainStep|ScoreBatch)_Cuda", "--benchmark_format=json",
                          "--benchmark_min_time=0.5"], check=True, capture_output=True, text=True).stdout
    runs = {b["name"]: b for b in json.loads(out)["benchmarks"]}

    def seconds(name):
        run = runs[name + "/manual_time"] if name + "/manual_time" in runs else runs[name]
        return run["real_time"] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[run.get("time_unit", "us")]

    return {f"isize{s}": {"train_step_s": seconds(f"BM_TrainStep_Cuda/isize{s}_batch64"),
                          "score64_s": seconds(f"BM_ScoreBatch_Cuda/isize{s}_batch64"),
                          "score1_s": seconds(f"BM_ScoreBatch_Cuda/isize{s}_batch1")} for s in SIZES}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", default="build/bench/bench_cuda")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--pytorch-only", action="store_true", help=argparse.SUPPRESS)
    # Checking the PyTorch side without a GPU: --pytorch-only --device cpu --sizes 32.
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pytorch_only:
        print(json.dumps(pytorch_measurements(args.repeats, args.device, args.sizes)))
        return 0
    try:
        torch_run = subprocess.run([sys.executable, __file__, "--pytorch-only", "--repeats", str(args.repeats)],
                                   capture_output=True, text=True)
    except OSError as e:
        print(f"compare_pytorch_cuda: cannot run PyTorch: {e}")
        return 0
    if torch_run.returncode != 0:
        print(f"compare_pytorch_cuda: the PyTorch side failed (no PyTorch?):\n{torch_run.stderr[-2000:]}")
        return 0
    torch_result = json.loads(torch_run.stdout)
    if "error" in torch_result:
        print(f"compare_pytorch_cuda: {torch_result['error']}; nothing to compare")
        return 0
    our_result = ours(args.bench)
    print(f"PyTorch {torch_result['torch']} eager vs skipganomaly on {torch_result['device']}, nc 3, ngf=ndf=64, FP32")
    print(f"{'measure':<40}{'PyTorch':>12}{'ours':>12}{'ratio':>10}")
    for s in SIZES:
        key = f"isize{s}"
        for label, field, scale in (("train step, batch 64 (ms)", "train_step_s", 1e3),
                                    ("score, batch 64 (ms)", "score64_s", 1e3),
                                    ("score, batch 1 (ms)", "score1_s", 1e3)):
            t, o = torch_result[key][field], our_result[key][field]
            print(f"{'isize ' + str(s) + ': ' + label:<40}{t * scale:>12.3f}{o * scale:>12.3f}{t / o:>9.2f}x")
        print(f"{'isize ' + str(s) + ': score throughput (img/s)':<40}{64 / torch_result[key]['score64_s']:>12.0f}"
              f"{64 / our_result[key]['score64_s']:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
