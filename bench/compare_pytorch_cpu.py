#!/usr/bin/python3
"""Side-by-side CPU speed and memory: the same Skip-GANomaly in PyTorch and in skipganomaly.

nc 3, ngf = ndf = 64, nz 100, float32, 2 threads each, at isize 32, 64, 128 and 256: one
training step (G and D updates, exactly the official optimize_params), scoring at a large
batch and at batch 1 (eval mode, no gradients), and the peak resident memory of each. Every
measurement runs in a process of its own, so each peak is that measurement's alone (ours from a
process that runs the benchmark function once, building the model once as PyTorch's does). The
machine's practical GEMM peak (Eigen's 1024 x 1024 float GEMM, bench_conv2d_cpu) and its read
bandwidth (BM_ReadBandwidth_Cpu, 64 MiB) are measured in the same run. Prints a markdown table;
ratio = ours / PyTorch (time or memory: < 1 is ours better), then the batch-1 floor: the
weights one scoring call reads (bench_model_cpu's weights_MiB) over that bandwidth, and a
roofline: per convolution layer the longer of its active weights at that bandwidth and its
active FLOPs at the GEMM peak, summed; then the batched rows' convolution FLOP rate against the
GEMM peak; 8 application threads scoring at once against one caller's batch of 64 (isize 32);
and last the speed and memory targets against this run, with what each missed one would need.

Our side runs in each of --our-precisions (default float32,bfloat16): scoring in bfloat16
(Precision::BFloat16, AVX512-BF16) and training with bfloat16 convolutions
(DetectorOptions::training_precision) where the processor has it. Each row names the faster
of ours. The processor's float32, bfloat16 and int8 register
peaks (BM_PeakFloat32_Cpu, BM_PeakBf16_Cpu, BM_PeakInt8_Cpu) are measured in the same run, and the batched rows' FLOP
rates are read against the peak of the precision that ran.

PyTorch baseline: the strongest CPU configuration of Debian's PyTorch 1.13, in float32 and in
bfloat16 (torch.autocast, oneDNN; on CPUs with avx512_bf16 it trains and scores faster), each row
against the faster of the two (--pytorch-precisions), whose precision the table names. Its stock
ConvTranspose2d runs on the reference BLAS, 20-50x slower than its convolutions (oneDNN), so
every ConvTranspose2d is computed as conv2d's input gradient (torch.nn.grad.conv2d_input, the
same arithmetic, differentiable) unless --stock-conv-transpose is given (a footnote figure).
Both sides run with glibc's malloc keeping its heap (MALLOC_KEPT below): with the defaults,
PyTorch spent most of its large-isize time in page faults on the VM this was measured on.

    /usr/bin/python3 bench/compare_pytorch_cpu.py --bench build/bench/bench_model_cpu \\
        --gemm-bench build/bench/bench_conv2d_cpu --sizes 32,128
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))

# isize -> (training batch, scoring batch): 64 where that is quick, smaller at 128 and 256 so
# that the whole table takes minutes on 2 cores. The same batches are registered in
# bench/bench_model_cpu.cpp.
BATCHES = {32: (64, 64), 64: (64, 64), 128: (16, 32), 256: (8, 16)}
THREADS = 2
# glibc's malloc hands every buffer above its mmap threshold back to the kernel when it is
# freed, so a process that frees and reallocates large buffers on every call (PyTorch's
# activations) takes fresh page faults on every call. On a VM where faults are expensive that
# dominated PyTorch's large-isize timings (2026-12-01, AMD EPYC VM: batch-1 scoring at isize 256
# 1074 ms with the defaults, 193 ms with these settings; 11.7 s of a 16.8 s process in the
# kernel). Both sides run with the heap kept: the threshold at its maximum (32 MiB), no trimming.
# --default-malloc measures without them.
MALLOC_KEPT = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(16 << 30),
               "MALLOC_TOP_PAD_": str(1 << 30)}
ENVIRONMENT = dict(os.environ)


def use_fast_conv_transpose(torch):
    """ConvTranspose2d.forward as conv2d's input gradient: oneDNN instead of the reference BLAS."""

    def forward(self, x, output_size=None):
        n, _, h, w = x.shape
        s, p, k, o = self.stride, self.padding, self.kernel_size, self.output_padding
        size = (n, self.out_channels, (h - 1) * s[0] - 2 * p[0] + k[0] + o[0], (w - 1) * s[1] - 2 * p[1] + k[1] + o[1])
        weight = self.weight
        if torch.is_autocast_cpu_enabled():  # autocast does not know conv2d_input: cast as it casts conv2d
            dtype = torch.get_autocast_cpu_dtype()
            x, weight = x.to(dtype), weight.to(dtype)
        y = torch.nn.grad.conv2d_input(size, weight, x, stride=s, padding=p, dilation=self.dilation,
                                       groups=self.groups)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    torch.nn.ConvTranspose2d.forward = forward


def pytorch_measurement(isize, what, batch, repeats, stock, precision="fp32"):
    import contextlib
    import torch
    import make_fixtures as mf  # the official modules, rebuilt for the parity fixtures

    torch.set_num_threads(THREADS)
    if not stock:
        use_fast_conv_transpose(torch)
    torch.manual_seed(0)
    netg, netd = mf.make_networks(isize, 3, 64, 64, 100)
    g = torch.Generator().manual_seed(0)
    mf.init_dcgan(netg, g, False)
    mf.init_dcgan(netd, g, False)
    x = torch.rand(batch, 3, isize, isize) * 2 - 1
    # bf16: torch.autocast (oneDNN's bfloat16 convolutions where the CPU has avx512_bf16; weights,
    # batch norm and the optimiser stay float32).
    def precision_context():
        return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def best_of(fn, n):
        fn()  # warm-up
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    if what == "train":
        def train():
            with precision_context():
                mf.official_train_step(netg, netd, x)

        seconds = best_of(train, repeats)
        # Backward costs about twice the forward (input and weight gradients): 3x the
        # forward passes' FLOPs, an approximation (the first layer needs no input gradient).
        flop = 3 * count_convolution_flop(torch, (netg, netd), lambda: mf.official_train_step(netg, netd, x))
    else:
        netg.eval()
        netd.eval()

        def score():
            with torch.no_grad(), precision_context():
                fake = netg(x)
                _, f_real = netd(x)
                _, f_fake = netd(fake)
                rec = ((x - fake) ** 2).flatten(1).mean(1)
                lat = ((f_real - f_fake) ** 2).flatten(1).mean(1)
                return 0.9 * rec + 0.1 * lat

        seconds = best_of(score, repeats * (10 if batch == 1 else 2))
        flop = count_convolution_flop(torch, (netg, netd), score)
        layers = count_layer_work(torch, (netg, netd), score)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {"seconds": seconds, "peak_mib": peak, "torch": torch.__version__, "gflop": flop / 1e9,
              "precision": precision}
    if what == "score":
        result["layers"] = layers
    return result


def count_convolution_flop(torch, networks, fn):
    """FLOPs of the convolutions that one call of fn runs: 2 per multiply-add of each dense
    convolution (taps over padding included, the usual convention), counted by forward hooks
    on the networks' layers. The convolutions are all but a fraction of a percent of the work."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        if isinstance(module, torch.nn.ConvTranspose2d):  # every input element meets the whole kernel
            total += 2 * inputs[0].numel() * module.out_channels // module.groups * kh * kw
        else:  # every output element is one window of the input
            total += 2 * output.numel() * module.in_channels // module.groups * kh * kw

    run_with_convolution_hook(torch, networks, fn, hook)
    return total


def run_with_convolution_hook(torch, networks, fn, hook):
    """One call of fn with hook(module, inputs, output) on every convolution of the networks."""
    handles = [m.register_forward_hook(hook) for net in networks for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()


def active_pairs(size_in, size_out, kernel, stride, padding, transposed):
    """Along one axis: the (position, tap) pairs of a convolution that read real input, not
    padding, and how many of the kernel's taps are in at least one of them. Forward: output o
    reads input o * stride - padding + tap; transposed: input i writes output
    i * stride - padding + tap."""
    pairs, taps = 0, set()
    for position in range(size_in if transposed else size_out):
        for tap in range(kernel):
            other = position * stride - padding + tap
            if 0 <= other < (size_out if transposed else size_in):
                pairs += 1
                taps.add(tap)
    return pairs, len(taps)


def count_layer_work(torch, networks, fn):
    """Per convolution layer of one call of fn: the bytes of the weight taps that read real
    input (what a kernel must load at least once) and the FLOPs of those taps (2 per
    multiply-add, padding skipped). A layer run twice in the call (D on the images and on their
    reconstructions) counts its FLOPs twice and its weight once, as one batch of both would."""
    work = {}

    def hook(module, inputs, output):
        x = inputs[0]
        transposed = isinstance(module, torch.nn.ConvTranspose2d)
        axes = [active_pairs(x.shape[2 + a], output.shape[2 + a], module.kernel_size[a], module.stride[a],
                             module.padding[a], transposed) for a in (0, 1)]
        channels = module.in_channels * module.out_channels // module.groups
        weight_bytes = 4 * channels * axes[0][1] * axes[1][1]
        flop = 2 * x.shape[0] * channels * axes[0][0] * axes[1][0]
        previous = work.get(id(module), (weight_bytes, 0))
        work[id(module)] = (weight_bytes, previous[1] + flop)

    run_with_convolution_hook(torch, networks, fn, hook)
    return list(work.values())


def roofline_seconds(layers, bandwidth, peak_flop):
    """A lower bound on one call's time: per layer, its weights at the read bandwidth or its
    FLOPs at the GEMM peak, whichever is longer, summed over the layers (the layers run one
    after another; activations, which are small beside the weights at batch 1, are left out)."""
    return sum(max(weight_bytes / bandwidth, flop / peak_flop) for weight_bytes, flop in layers)


def run_pytorch(isize, what, batch, repeats, stock, precisions=("fp32",)):
    """The fastest of PyTorch's configurations in `precisions` (each in a process of its own), with
    every one's time under "all"."""
    results = []
    for precision in precisions:
        command = [sys.executable, __file__, "--pytorch-only", f"{isize},{what},{batch},{precision}", "--repeats",
                   str(repeats), "--threads", str(THREADS)]
        if stock:
            command.append("--stock-conv-transpose")
        run = subprocess.run(command, capture_output=True, text=True, env=ENVIRONMENT)
        if run.returncode != 0:  # e.g. no bfloat16 on this CPU or PyTorch: that configuration does not exist here
            print(f"  PyTorch {precision} isize {isize} {what} batch {batch} did not run: {run.stderr.strip()[-200:]}",
                  file=sys.stderr, flush=True)
            continue
        results.append(json.loads(run.stdout))
    if not results:
        raise RuntimeError(f"no PyTorch configuration ran for isize {isize} {what} batch {batch}")
    fastest = dict(min(results, key=lambda r: r["seconds"]))
    fastest["all"] = {r["precision"]: r["seconds"] for r in results}
    return fastest


def run_benchmark(binary, pattern, min_time):
    """The first Google Benchmark run of `binary` matching the regex `pattern`, on THREADS threads."""
    out = subprocess.run([binary, f"--benchmark_filter={pattern}", "--benchmark_format=json",
                          f"--benchmark_min_time={min_time}"], check=True, capture_output=True, text=True,
                         env=dict(ENVIRONMENT, OMP_NUM_THREADS=str(THREADS))).stdout
    runs = json.loads(out)["benchmarks"]
    if not runs:
        raise SystemExit(f"{binary} has no benchmark matching {pattern}")
    return runs[0]


def run_ours(bench, isize, what, batch, min_time, precision="float32"):
    """Our time from a Google Benchmark run of `min_time` seconds, and our peak memory from a
    process that builds the model once, as the PyTorch side's does: to size its timing loop
    Google Benchmark runs a function several times in one process, each time with a new model,
    and with the heap kept what the earlier runs freed stays resident (213 MiB of weights at
    isize 128). A run of one iteration runs the function once (the model, two warm-up calls,
    one timed call); the timing process's peak is kept for the log. None where the benchmark
    skipped (bfloat16 on a processor without it)."""
    kind = ("TrainStep" if what == "train" else "ScoreBatch") + ("Bf16" if precision == "bfloat16" else "")
    name = f"BM_{kind}_Cpu/isize:{isize}/batch:{batch}/real_time"
    run = run_benchmark(bench, f"^{name}$", min_time)
    if run.get("error_occurred"):
        return None
    once = run_benchmark(bench, f"^{name}$", 0.001)
    return {"seconds": run["real_time"] / 1e3, "peak_mib": once["peak_MiB"],  # real_time in ms
            "timing_process_peak_mib": run["peak_MiB"], "weights_mib": run.get("weights_MiB"), "precision": precision}


def default_recipe_batch1(bench, min_time, precision):
    """Seconds of one image scored as the default recipe scores it (its four quarter turns), isize 32."""
    kind = "ScoreDefaultRecipeBf16" if precision == "bfloat16" else "ScoreDefaultRecipe"
    run = run_benchmark(bench, f"^BM_{kind}_Cpu/isize:32/batch:1/real_time$", min_time)
    return None if run.get("error_occurred") else run["real_time"] / 1e3


def register_peaks(gemm_bench):
    """GFLOP/s (int8: GOP/s) of the float32, bfloat16 and int8 register-only peaks on THREADS threads
    (nan: not measured)."""
    peaks = {}
    for precision, name in (("float32", "BM_PeakFloat32_Cpu"), ("bfloat16", "BM_PeakBf16_Cpu"), ("int8", "BM_PeakInt8_Cpu")):
        run = run_benchmark(gemm_bench, f"^{name}/", 0.5) if os.path.exists(gemm_bench) else {"error_occurred": True}
        peaks[precision] = float("nan") if run.get("error_occurred") else run["FLOP"] / 1e9
    return peaks


def concurrent_callers(bench, min_time, rounds=2):
    """Images/s at isize 32 of 8 application threads scoring one image a call (through the
    score batcher, as Detector::score does), and of one caller scoring batches of 64,
    alternated `rounds` times in one process each; medians."""
    callers, batch = [], []
    for _ in range(rounds):
        callers.append(run_benchmark(bench, "^BM_ScoreConcurrentBatched_Cpu/real_time/threads:8$", min_time)["items_per_second"])
        seconds = run_benchmark(bench, "^BM_ScoreBatch_Cpu/isize:32/batch:64/real_time$", min_time)["real_time"] / 1e3
        batch.append(64 / seconds)
    return statistics.median(callers), statistics.median(batch)


def gemm_peak(gemm_bench):
    return run_benchmark(gemm_bench, "^BM_EigenGemm_Cpu/1024", 1)["FLOP"] / 1e9


def read_bandwidth(gemm_bench, mib):
    """Bytes/s at which THREADS threads read a buffer of `mib` MiB (BM_ReadBandwidth_Cpu)."""
    return run_benchmark(gemm_bench, f"^BM_ReadBandwidth_Cpu/MiB:{mib}/", 1)["bytes_per_second"]


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, load average {load[0]:.1f} at start"


def main():
    global THREADS
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", default="build/bench/bench_model_cpu")
    parser.add_argument("--gemm-bench", default="build/bench/bench_conv2d_cpu")
    parser.add_argument("--sizes", default="32,64,128,256")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=THREADS, help="threads of each side (default 2)")
    parser.add_argument("--min-time", type=float, default=1.0, help="Google Benchmark min time per measurement (s)")
    parser.add_argument("--stock-conv-transpose", action="store_true",
                        help="PyTorch's own ConvTranspose2d (slow reference BLAS on Debian): footnote figures")
    parser.add_argument("--default-malloc", action="store_true",
                        help="glibc malloc's default settings for both sides (see MALLOC_KEPT)")
    parser.add_argument("--pytorch-precisions", default="fp32,bf16",
                        help="PyTorch configurations to time; each row compares against the fastest (default fp32,bf16)")
    parser.add_argument("--our-precisions", default="float32,bfloat16",
                        help="our scoring precisions to time; each row names the fastest (default float32,bfloat16)")
    parser.add_argument("--pytorch-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    THREADS = args.threads
    if not args.default_malloc:
        ENVIRONMENT.update(MALLOC_KEPT)
    if args.pytorch_only:
        isize, what, batch, precision = args.pytorch_only.split(",")
        print(json.dumps(pytorch_measurement(int(isize), what, int(batch), args.repeats, args.stock_conv_transpose,
                                             precision)))
        return

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"machine: {machine()}; {started}", flush=True)
    print("malloc: " + ("glibc defaults" if args.default_malloc else
                        " ".join(f"{k}={v}" for k, v in MALLOC_KEPT.items()) + " (both sides)"), flush=True)
    peak = gemm_peak(args.gemm_bench) if os.path.exists(args.gemm_bench) else float("nan")
    print(f"GEMM peak (Eigen 1024^3 float, {THREADS} threads): {peak:.1f} GFLOP/s", flush=True)
    bandwidth = read_bandwidth(args.gemm_bench, 64) if os.path.exists(args.gemm_bench) else float("nan")
    print(f"read bandwidth ({THREADS} threads, 64 MiB buffer): {bandwidth / 1e9:.1f} GB/s", flush=True)
    peaks = register_peaks(args.gemm_bench)
    print(f"register peaks ({THREADS} threads): float32 FMA {peaks['float32']:.1f} GFLOP/s, "
          f"bfloat16 dot product {peaks['bfloat16']:.1f} GFLOP/s, int8 dot product {peaks['int8']:.1f} GOP/s "
          f"(no int8 kernel in the library)", flush=True)
    our_precisions = tuple(filter(None, args.our_precisions.split(",")))
    precisions = tuple(filter(None, args.pytorch_precisions.split(",")))
    rows = []
    torch_version = "?"
    sizes = [int(s) for s in args.sizes.split(",")]
    for isize in sizes:
        train_batch, score_batch = BATCHES[isize]
        for label, what, batch in (("training step", "train", train_batch), ("scoring", "score", score_batch),
                                   ("scoring", "score", 1)):
            theirs = run_pytorch(isize, what, batch, args.repeats, args.stock_conv_transpose, precisions)
            torch_version = theirs["torch"]
            measured = {}
            for precision in our_precisions:
                result = run_ours(args.bench, isize, what, batch, args.min_time, precision)
                if result:
                    measured[precision] = result
            ours = dict(min(measured.values(), key=lambda r: r["seconds"]))
            ours["all"] = {p: r["seconds"] for p, r in measured.items()}
            rows.append((isize, f"{label}, batch {batch}", theirs, ours, batch))
            print(f"  isize {isize} {label} batch {batch}: PyTorch "
                  + ", ".join(f"{p} {t * 1e3:.1f} ms" for p, t in theirs["all"].items()) + f" (fastest {theirs['precision']}) "
                  f"{theirs['peak_mib']:.0f} MiB, ours "
                  + ", ".join(f"{p} {t * 1e3:.1f} ms" for p, t in ours["all"].items()) +
                  f" {ours['peak_mib']:.0f} MiB ({ours['timing_process_peak_mib']:.0f} MiB in the timing process)",
                  file=sys.stderr, flush=True)
    conv_t = "stock ConvTranspose2d" if args.stock_conv_transpose else "ConvTranspose2d as conv2d_input (oneDNN)"
    print(f"\nPyTorch {torch_version} ({THREADS} threads, {conv_t}; each row its fastest of "
          f"{', '.join(precisions)}, named) vs skipganomaly ({THREADS} threads; each row its fastest of "
          f"{', '.join(our_precisions)}, named); nc 3, ngf = ndf = 64, nz 100\n")
    print("| isize | measure | PyTorch (fastest) | PyTorch precision | ours (fastest) | our precision | "
          "ours / PyTorch time | PyTorch peak MiB | our peak MiB | ours / PyTorch memory | PyTorch float32 | ours float32 |")
    print("|---:|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for isize, label, theirs, ours, batch in rows:
        def shown(seconds):
            return f"{seconds * 1e3:.1f} ms" + (f" ({batch / seconds:.0f} img/s)" if batch > 1 and "scoring" in label else "")
        fp32 = theirs["all"].get("fp32")
        ours_fp32 = ours["all"].get("float32")
        print(f"| {isize} | {label} | {shown(theirs['seconds'])} | {theirs['precision']} | {shown(ours['seconds'])} | "
              f"{ours['precision']} | {ours['seconds'] / theirs['seconds']:.2f} | {theirs['peak_mib']:.0f} | "
              f"{ours['peak_mib']:.0f} | {ours['peak_mib'] / theirs['peak_mib']:.2f} | {shown(fp32) if fp32 else '-'} | "
              f"{shown(ours_fp32) if ours_fp32 else '-'} |")
    # Scoring one image reads every weight once: at the measured read bandwidth that alone
    # takes weights / bandwidth, the floor under batch-1 latency whatever the kernels do. The
    # roofline adds the arithmetic: per layer, the longer of its weights at that bandwidth and
    # its FLOPs at the GEMM peak. The target column is TIME_TARGETS' (isize 64 has none; 1/2
    # is shown).
    print(f"\nBatch-1 floor: the weights one scoring call reads, at {bandwidth / 1e9:.1f} GB/s; roofline: "
          f"per layer the longer of its active weights at that bandwidth and its active FLOPs at the GEMM peak\n")
    print("| isize | weights read | floor | roofline | target | roofline / target | ours | ours / roofline | PyTorch | "
          "PyTorch / roofline |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for isize, label, theirs, ours, batch in rows:
        if batch == 1 and ours.get("weights_mib"):
            floor = ours["weights_mib"] * 1024 * 1024 / bandwidth
            roof = roofline_seconds(theirs["layers"], bandwidth, peak * 1e9)
            target = theirs["seconds"] * TIME_TARGETS.get(("score1", isize), 1 / 2)
            print(f"| {isize} | {ours['weights_mib']:.1f} MiB | {floor * 1e3:.2f} ms | {roof * 1e3:.2f} ms | "
                  f"{target * 1e3:.2f} ms | {roof / target:.2f} | {ours['seconds'] * 1e3:.2f} ms | "
                  f"{ours['seconds'] / roof:.2f} | {theirs['seconds'] * 1e3:.2f} ms | {theirs['seconds'] / roof:.2f} |")
    # The batched rows against the GEMM peak (the 85% target is on the FLOPs
    # computed); both sides are given the same count, PyTorch's.
    print(f"\nConvolution FLOPs (dense; training: 3x its forward passes') per second against the float32 GEMM peak "
          f"({peak:.1f} GFLOP/s, Eigen) and, for our bfloat16 rows, the bfloat16 register peak "
          f"({peaks['bfloat16']:.1f} GFLOP/s)\n")
    print("| isize | measure | GFLOP per call | our precision | ours GFLOP/s | ours / its peak | PyTorch GFLOP/s | "
          "PyTorch / float32 GEMM peak |")
    print("|---:|---|---:|---|---:|---:|---:|---:|")
    for isize, label, theirs, ours, batch in rows:
        if batch > 1:
            gflop = theirs["gflop"]
            own_peak = peaks["bfloat16"] if ours["precision"] == "bfloat16" else peak
            print(f"| {isize} | {label} | {gflop:.1f} | {ours['precision']} | {gflop / ours['seconds']:.0f} | "
                  f"{gflop / ours['seconds'] / own_peak:.2f} | {gflop / theirs['seconds']:.0f} | "
                  f"{gflop / theirs['seconds'] / peak:.2f} |")
    callers = concurrent_callers(args.bench, args.min_time) if 32 in sizes else None
    if callers:
        print(f"\n8 application threads scoring one image a call (isize 32, through the score batcher): "
              f"{callers[0]:.0f} images/s in total; one caller at batch 64: {callers[1]:.0f} images/s "
              f"(medians of 2 alternations)")
    recipe = {p: default_recipe_batch1(args.bench, args.min_time, p) for p in our_precisions} if 32 in sizes else {}
    recipe = {p: t for p, t in recipe.items() if t}
    official = next((theirs["seconds"] for isize, label, theirs, ours, batch in rows if isize == 32 and batch == 1), None)
    if recipe and official:
        print(f"\nThe default recipe's batch-1 score (four quarter turns, isize 32): "
              + ", ".join(f"{p} {t * 1e3:.2f} ms" for p, t in recipe.items())
              + f"; PyTorch's fastest single-view batch 1 of the official model: {official * 1e3:.2f} ms")
    print_targets(rows, bandwidth, peak, callers, peaks, (min(recipe.values()), official) if recipe and official else None)


# The targets: (measure, isize) -> largest ours / PyTorch time allowed, against PyTorch's fastest
# precision. Batch-1 scoring <= 0.15 of PyTorch's time at isize 32 and <= 0.35 at 128;
# large-batch scoring >= 1.5x PyTorch's throughput; the training step <= 0.6x.
TIME_TARGETS = {("score1", 32): 0.15, ("score1", 128): 0.35, ("scoreN", 32): 1 / 1.5, ("scoreN", 128): 1 / 1.5,
                ("train", 32): 0.6, ("train", 128): 0.6}
PEAK_SHARE_TARGET = 0.80  # large-batch scoring, on the FLOPs computed, against the peak of the precision that ran
CALLERS_TARGET = 0.90  # 8 callers' total throughput against one caller's batch-64 throughput


def print_targets(rows, bandwidth, peak, callers=None, peaks=None, recipe=None):
    """Each target against this run, and for a missed speed target what meeting it would take:
    batched rows, the FLOP rate the target time needs against the GEMM peak; batch-1 rows, the
    roofline against the target time (above 1: no implementation of these FLOPs meets it)."""
    print(f"\nTargets in this run (GEMM peak {peak:.1f} GFLOP/s, read bandwidth {bandwidth / 1e9:.1f} GB/s)\n")
    print("| target | isize | measured | met | what meeting it needs |")
    print("|---|---:|---:|---|---|")
    for isize, label, theirs, ours, batch in rows:
        kind = "train" if label.startswith("training") else ("score1" if batch == 1 else "scoreN")
        ratio = ours["seconds"] / theirs["seconds"]
        limit = TIME_TARGETS.get((kind, isize))
        if limit is not None:
            target_seconds = limit * theirs["seconds"]
            if kind == "score1":
                roof = roofline_seconds(theirs["layers"], bandwidth, peak * 1e9)
                need = f"roofline / target time {roof / target_seconds:.2f}; ours / roofline {ours['seconds'] / roof:.2f}"
            else:
                need = f"{theirs['gflop'] / target_seconds / peak:.2f} x the float32 GEMM peak"
                if peaks and peaks["bfloat16"] == peaks["bfloat16"]:  # measured (not nan)
                    need += f", {theirs['gflop'] / target_seconds / peaks['bfloat16']:.2f} x the bfloat16 register peak"
            shown = f"{1 / ratio:.2f}x throughput" if kind == "scoreN" else f"{ratio:.2f} of the time"
            wanted = f">= {1 / limit:.1f}x throughput" if kind == "scoreN" else f"<= {limit:.2f} of the time"
            print(f"| {label}: {wanted} | {isize} | {shown} | {'yes' if ratio <= limit else 'no'} | "
                  f"{'' if ratio <= limit else need} |")
        if kind == "scoreN":
            own_peak = peaks["bfloat16"] if peaks and ours.get("precision") == "bfloat16" else peak
            which = "bfloat16 register" if peaks and ours.get("precision") == "bfloat16" else "float32 GEMM"
            share = theirs["gflop"] / ours["seconds"] / own_peak
            print(f"| {label}: >= {PEAK_SHARE_TARGET:.2f} of the {which} peak | {isize} | {share:.2f} | "
                  f"{'yes' if share >= PEAK_SHARE_TARGET else 'no'} | |")
        memory = ours["peak_mib"] / theirs["peak_mib"]
        print(f"| {label}: peak memory <= PyTorch's | {isize} | {memory:.2f} | {'yes' if memory <= 1 else 'no'} | |")
    if recipe:
        ratio = recipe[0] / recipe[1]
        print(f"| default recipe batch 1 (4 turns) <= PyTorch's fastest single view | 32 | {ratio:.2f} of the time | "
              f"{'yes' if ratio <= 1 else 'no'} | |")
    if callers:
        share = callers[0] / callers[1]
        print(f"| 8 callers: >= {CALLERS_TARGET:.2f} of batch-64 throughput | 32 | {share:.2f} | "
              f"{'yes' if share >= CALLERS_TARGET else 'no'} | "
              f"{'' if share >= CALLERS_TARGET else 'batch-1-shape arithmetic at batch-64 efficiency (docs/benchmarks.md)'} |")


if __name__ == "__main__":
    main()
