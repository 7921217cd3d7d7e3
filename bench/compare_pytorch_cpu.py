#!/usr/bin/python3
"""Side-by-side CPU speed: the same Skip-GANomaly in Debian's PyTorch and in skipganomaly.

Full size: isize 32, nc 3, ngf = ndf = 64, nz 100, float32, 2 threads each. Measures one
training step at batch 64 (G and D updates, exactly the official optimize_params), scoring
throughput at batch 64 and latency at batch 1 (eval mode, no gradients), and each process's
peak resident memory. Prints a table with the ratios (PyTorch time / ours: > 1 means we are
faster).

    /usr/bin/python3 bench/compare_pytorch_cpu.py --bench build/bench/bench_model_cpu
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))


def pytorch_measurements(repeats):
    import torch
    import make_fixtures as mf  # the official modules, rebuilt for the parity fixtures

    torch.set_num_threads(2)
    torch.manual_seed(0)
    netg, netd = mf.make_networks(32, 3, 64, 64, 100)
    g = torch.Generator().manual_seed(0)
    mf.init_dcgan(netg, g, False)
    mf.init_dcgan(netd, g, False)
    x = torch.rand(64, 3, 32, 32) * 2 - 1

    def best_of(fn, n):
        fn()  # warm-up
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    train = best_of(lambda: mf.official_train_step(netg, netd, x), repeats)
    netg.eval()
    netd.eval()

    def score(batch):
        with torch.no_grad():
            fake = netg(batch)
            _, f_real = netd(batch)
            _, f_fake = netd(fake)
            rec = ((batch - fake) ** 2).flatten(1).mean(1)
            lat = ((f_real - f_fake) ** 2).flatten(1).mean(1)
            return 0.9 * rec + 0.1 * lat

    score64 = best_of(lambda: score(x), 10 * repeats)
    score1 = best_of(lambda: score(x[:1]), 50 * repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"train_step_s": train, "score64_s": score64, "score1_s": score1, "peak_mib": peak,
            "torch": torch.__version__}


def ours(bench):
    out = subprocess.run([bench, "--benchmark_format=json", "--benchmark_min_time=3"], check=True,
                         capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2")).stdout
    runs = {b["name"]: b for b in json.loads(out)["benchmarks"]}
    seconds = lambda name: runs[name]["real_time"] / 1e3  # reported in ms
    return {"train_step_s": seconds("BM_TrainStep_Cpu/64/real_time"),
            "score64_s": seconds("BM_ScoreBatch_Cpu/64/real_time"),
            "score1_s": seconds("BM_ScoreBatch_Cpu/1/real_time"),
            "peak_mib": max(b["peak_MiB"] for b in runs.values())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", default="build/bench/bench_model_cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pytorch-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pytorch_only:
        print(json.dumps(pytorch_measurements(args.repeats)))
        return
    # PyTorch in its own process, so each side's peak memory is its own.
    torch_result = json.loads(subprocess.run([sys.executable, __file__, "--pytorch-only", "--repeats", str(args.repeats)],
                                             check=True, capture_output=True, text=True).stdout)
    our_result = ours(args.bench)
    print(f"PyTorch {torch_result['torch']} (2 threads) vs skipganomaly (2 threads), isize 32, nc 3, ngf=ndf=64")
    print(f"{'measure':<28}{'PyTorch':>12}{'ours':>12}{'ratio':>10}")
    rows = [("train step, batch 64 (s)", "train_step_s"), ("score, batch 64 (s)", "score64_s"),
            ("score, batch 1 (ms)", "score1_s")]
    for label, key in rows:
        scale = 1e3 if "ms" in label else 1.0
        print(f"{label:<28}{torch_result[key] * scale:>12.3f}{our_result[key] * scale:>12.3f}"
              f"{torch_result[key] / our_result[key]:>9.2f}x")
    print(f"{'score throughput (img/s)':<28}{64 / torch_result['score64_s']:>12.0f}{64 / our_result['score64_s']:>12.0f}")
    print(f"{'peak memory (MiB)':<28}{torch_result['peak_mib']:>12.0f}{our_result['peak_mib']:>12.0f}"
          f"{torch_result['peak_mib'] / our_result['peak_mib']:>9.2f}x")


if __name__ == "__main__":
    main()
