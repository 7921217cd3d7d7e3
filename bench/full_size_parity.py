#!/usr/bin/env python3
"""Full-size parity with PyTorch over consecutive training steps on real data.

The parity tests pin our training step to the official one on tiny networks (ngf = ndf = 4);
this runs the MNIST configuration itself (isize 32, nc 1, ngf = ndf = 64, nz 100, batch 64):
official networks initialised in PyTorch (init_weights('normal')), converted to our model
file (python/interop/convert_official_weights.py), then the same STEPS batches of one digit's
training images go through bench/replay_steps (ours) and through OfficialTraining from
tests/fixtures/make_fixtures.py (PyTorch float32, and float64 as the yardstick). Printed: each
step's losses, and per state-dict tensor the displacement error against float64 PyTorch,
|w - w64|_2 / |w64 - w_start|_2, of ours and of float32 PyTorch, worst tensors first: both
float32 implementations should be about equally far from float64.

  cmake --build build --target replay_steps
  /usr/bin/python3 bench/full_size_parity.py --replay build/bench/replay_steps --steps 3
"""
import argparse
import copy
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import make_fixtures  # noqa: E402
from make_fixtures import OfficialTraining, init_dcgan, make_networks  # noqa: E402
from reference_mnist_pytorch import preprocess, read_idx  # noqa: E402

ARCH = dict(isize=32, nc=1, ngf=64, ndf=64, nz=100)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    tensors = {}
    for name, record in header.items():
        if name == "__metadata__" or record["dtype"] != "F32":
            continue
        begin, end = record["data_offsets"]
        tensors[name] = np.frombuffer(data[8 + length + begin:8 + length + end], dtype="<f4").reshape(record["shape"])
    return tensors


def state(netg, netd):
    out = {"netg." + k: v.detach().double().numpy() for k, v in netg.state_dict().items() if not k.endswith("tracked")}
    out.update({"netd." + k: v.detach().double().numpy() for k, v in netd.state_dict().items() if not k.endswith("tracked")})
    return out


def displacement_errors(start, reference, other):
    errors = {}
    for key, s in start.items():
        moved = np.linalg.norm(reference[key] - s)
        errors[key] = np.linalg.norm(np.asarray(other[key], dtype=np.float64) - reference[key]) / moved if moved > 0 else 0.0
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replay", default=os.path.join(ROOT, "build", "bench", "replay_steps"))
    parser.add_argument("--data", default=os.path.join(ROOT, "data", "mnist"))
    parser.add_argument("--digit", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loss-weights", default="1,50,1",
                        help="w_adv,w_con,w_lat; zeroing terms isolates one gradient path")
    parser.add_argument("--show", type=int, default=8, help="tensors listed per table, worst first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    make_fixtures.W_ADV, make_fixtures.W_CON, make_fixtures.W_LAT = (float(w) for w in args.loss_weights.split(","))
    generator = torch.Generator().manual_seed(args.seed)

    netg, netd = make_networks(**ARCH)
    init_dcgan(netg, generator, perturb_biases=False)
    init_dcgan(netd, generator, perturb_biases=False)
    images = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))
    train = preprocess(images[labels == args.digit])
    order = torch.randperm(train.shape[0], generator=generator)[:64 * args.steps]
    batches = [train[order[i * 64:(i + 1) * 64]] for i in range(args.steps)]

    with tempfile.TemporaryDirectory() as tmp:
        for name, net in (("netG.pth", netg), ("netD.pth", netd)):
            torch.save({"epoch": 0, "state_dict": net.state_dict()}, os.path.join(tmp, name))
        start_file, after_file = os.path.join(tmp, "start.safetensors"), os.path.join(tmp, "after.safetensors")
        gradients_file = os.path.join(tmp, "gradients.safetensors")
        subprocess.run([sys.executable, os.path.join(ROOT, "python", "interop", "convert_official_weights.py"),
                        "--netg", os.path.join(tmp, "netG.pth"), "--netd", os.path.join(tmp, "netD.pth"),
                        "--isize", "32", "--nc", "1", "--ngf", "64", "--ndf", "64", "--nz", "100",
                        "--out", start_file], check=True, stdout=subprocess.DEVNULL)
        torch.cat(batches).numpy().astype("<f4").tofile(os.path.join(tmp, "batches.f32"))
        replay = subprocess.run([args.replay, "--model", start_file, "--batches", os.path.join(tmp, "batches.f32"),
                                 "--batch", "64", "--steps", str(args.steps), "--out", after_file, "--gradients", gradients_file, "--loss-weights", args.loss_weights],
                                check=True, capture_output=True, text=True)
        ours_losses = [json.loads(line) for line in replay.stdout.splitlines()]
        ours = read_safetensors(after_file)
        ours_gradients = read_safetensors(gradients_file)

    start = state(netg, netd)
    g32, d32 = copy.deepcopy(netg), copy.deepcopy(netd)
    training32 = OfficialTraining(g32, d32)
    steps32 = [training32.step(x) for x in batches]
    losses32 = [s[0].tolist() for s in steps32]
    g64, d64 = copy.deepcopy(netg).double(), copy.deepcopy(netd).double()
    training64 = OfficialTraining(g64, d64)
    steps64 = [training64.step(x.double()) for x in batches]
    losses64 = [s[0].tolist() for s in steps64]
    torch32, torch64 = state(g32, d32), state(g64, d64)

    names = ["G", "G adv", "G con", "G lat", "D", "D real", "D fake"]
    print(f"digit {args.digit}, seed {args.seed}, {args.steps} steps of batch 64, isize 32, nc 1, ngf = ndf = 64, nz 100\n")
    print("| step | loss | ours | PyTorch float32 | PyTorch float64 | ours vs float64 | PyTorch float32 vs float64 |")
    print("|---|---|---|---|---|---|---|")
    for s in range(args.steps):
        for name, a, b, c in zip(names, ours_losses[s], losses32[s], losses64[s]):
            print(f"| {s + 1} | {name} | {a:.6f} | {b:.6f} | {c:.6f} | {abs(a - c) / max(abs(c), 1e-30):.1e} | {abs(b - c) / max(abs(c), 1e-30):.1e} |")
    ours_err = displacement_errors(start, torch64, ours)
    torch_err = displacement_errors(start, torch64, torch32)
    print("\nDisplacement error against float64 PyTorch, |w - w64|_2 / |w64 - w_start|_2:\n")
    print("| tensor | ours | PyTorch float32 |")
    print("|---|---|---|")
    for key in sorted(ours_err, key=ours_err.get, reverse=True)[:args.show]:
        print(f"| {key} | {ours_err[key]:.2e} | {torch_err[key]:.2e} |")
    gradient_err = {}
    for prefix, index in (("netg.", 1), ("netd.", 2)):
        for key, g64 in steps64[-1][index].items():
            g64 = g64.numpy()
            scale = np.linalg.norm(g64)
            gradient_err[prefix + key] = (np.linalg.norm(ours_gradients[prefix + key] - g64) / scale,
                                          np.linalg.norm(steps32[-1][index][key].double().numpy() - g64) / scale)
    print(f"\nGradients of step {args.steps} against float64 PyTorch, |g - g64|_2 / |g64|_2:\n")
    print("| tensor | ours | PyTorch float32 |")
    print("|---|---|---|")
    for key in sorted(gradient_err, key=lambda k: gradient_err[k][0], reverse=True)[:args.show]:
        print(f"| {key} | {gradient_err[key][0]:.2e} | {gradient_err[key][1]:.2e} |")
    print(f"\nmax over {len(ours_err)} tensors: ours {max(ours_err.values()):.2e}, "
          f"PyTorch float32 {max(torch_err.values()):.2e}; median: ours {np.median(list(ours_err.values())):.2e}, "
          f"PyTorch float32 {np.median(list(torch_err.values())):.2e}")


if __name__ == "__main__":
    main()
