#!/usr/bin/env python3
"""Checks the Python interop scripts against the library; run by CTest when /usr/bin/python3 has
what a part needs, reported as skipped (exit code 77) otherwise. CI never needs PyTorch.

  --part reader      (numpy) python/interop/skipganomaly_model.py reads a converted fixture and a file
                     the C++ library wrote (the tool's calibrate), checks every tensor against
                     the architecture, and refuses a damaged copy
  --part round-trip  (numpy + torch) export_official_weights.py -> convert_official_weights.py
                     with the architecture inferred from the weights gives the original file
                     bit for bit; the exported netG.pth / netD.pth load with strict=True into
                     the official modules (tests/fixtures/make_fixtures.py's copies); the converter's
                     --calibrate runs the tool and stores a real threshold
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "converted_tiny.safetensors")
SKIP = 77


def skip(reason):
    print("SKIPPED: " + reason)
    sys.exit(SKIP)


def check(condition, message):
    if not condition:
        print("FAILED: " + message)
        sys.exit(1)


def write_bmp(path, pixels):
    """A 24-bit BMP of an (H, W) uint8 grey array (the library reads BMP)."""
    h, w = pixels.shape
    row = (3 * w + 3) // 4 * 4
    body = bytearray()
    for y in range(h - 1, -1, -1):
        line = bytes(int(v) for v in pixels[y] for _ in range(3))
        body += line + b"\0" * (row - len(line))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(body), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(body), 2835, 2835, 0, 0)
    with open(path, "wb") as f:
        f.write(header + info + body)


def normal_images(folder, count, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    yy, xx = np.mgrid[0:28, 0:28]
    for i in range(count):
        cx, cy = rng.uniform(8, 20, 2)
        blob = 230 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18.0) + rng.uniform(0, 20, (28, 28))
        write_bmp(os.path.join(folder, f"n{i:02d}.bmp"), np.clip(blob, 0, 255).astype(np.uint8))


def calibrate_with_cli(cli, model, data):
    out = subprocess.run([cli, "calibrate", "--model", model, "--data", data, "--json", "--threads", "2"],
                         capture_output=True, text=True)
    check(out.returncode == 0, f"calibrate failed: {out.stderr}")
    return json.loads(out.stdout)


def part_reader(cli, work):
    try:
        import numpy as np
    except ImportError:
        skip("numpy is not installed (Debian: python3-numpy)")
    sys.path.insert(0, HERE)
    import skipganomaly_model as sm

    model = sm.read_model(FIXTURE)
    a = model.architecture
    check(a == {"image_size": 32, "channels": 1, "generator_features": 4, "discriminator_features": 4,
                "latent_size": 8}, f"architecture {a}")
    netg, netd = model.state_dict("netg"), model.state_dict("netd")
    check(len(netg) + len(netd) == len(model.tensors), "every tensor belongs to netg or netd")
    check(netg["model.model.0.weight"].shape == (4, 1, 4, 4), "first generator convolution (ngf, nc, 4, 4)")
    check(netd["clas.classifier.weight"].shape == (1, 8, 3, 3), "classifier (1, nz, 3, 3)")
    check(all(v.dtype == np.float32 for k, v in model.tensors.items() if not k.endswith("num_batches_tracked")),
          "weights are float32")
    check(all(v.dtype == np.int64 and v.shape == () for k, v in model.tensors.items()
              if k.endswith("num_batches_tracked")), "num_batches_tracked are int64 scalars")
    check(model.detector["threshold_source"] == "placeholder_uncalibrated", "the converter's placeholder")

    # One flipped bit anywhere is a checksum mismatch.
    data = bytearray(open(FIXTURE, "rb").read())
    data[len(data) // 2] ^= 0x10
    damaged = os.path.join(work, "damaged.safetensors")
    open(damaged, "wb").write(bytes(data))
    try:
        sm.read_model(damaged)
        check(False, "a damaged file was read")
    except sm.ModelFileError as e:
        check("checksum" in str(e), f"the damaged file's error names the checksum: {e}")

    # A file the C++ library wrote: the tool's calibrate on a copy of the fixture.
    if cli:
        copy = os.path.join(work, "calibrated.safetensors")
        shutil.copyfile(FIXTURE, copy)
        normal_images(os.path.join(work, "normal"), 12, 1)
        result = calibrate_with_cli(cli, copy, "folder:" + os.path.join(work, "normal"))
        written = sm.read_model(copy)
        check(written.metadata["library_version"] != "converted", "rewritten by the library")
        check(abs(written.detector["threshold"] - result["threshold"]) <= 1e-6 * abs(result["threshold"]),
              f"threshold {written.detector['threshold']} vs the tool's {result['threshold']}")
        check(written.detector["threshold_source"] == "calibrated_validation_quantile", "threshold source")
        check(written.detector["validation_statistics"]["count"] == 12, "statistics of the 12 images")
        check(written.detector["pixel_statistics"]["count"] == 12 * 32 * 32, "pixel statistics")
        for name, value in model.tensors.items():
            check(np.array_equal(written.tensors[name], value), f"tensor {name} unchanged by calibrate")
    print("reader: OK")


def part_round_trip(cli, work):
    try:
        import numpy as np  # noqa: F401
        import torch
    except ImportError:
        skip("numpy or torch is not installed (Debian: python3-numpy, python3-torch)")
    sys.path.insert(0, HERE)
    import skipganomaly_model as sm

    exported = os.path.join(work, "exported")
    subprocess.run([sys.executable, os.path.join(HERE, "export_official_weights.py"), FIXTURE, exported], check=True)
    again = os.path.join(work, "again.safetensors")
    # No --isize/--nc/...: the converter reads them from the weights.
    subprocess.run([sys.executable, os.path.join(HERE, "convert_official_weights.py"), "--netg",
                    os.path.join(exported, "netG.pth"), "--netd", os.path.join(exported, "netD.pth"), "--out", again],
                   check=True)
    check(open(again, "rb").read() == open(FIXTURE, "rb").read(),
          "export then convert gives the converted file bit for bit")

    # The official checkpoint format: {'epoch', 'state_dict'} loading strictly into the official modules.
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    import make_fixtures as official

    model = sm.read_model(FIXTURE)
    a = model.architecture
    netg, netd = official.make_networks(a["image_size"], a["channels"], a["generator_features"],
                                        a["discriminator_features"], a["latent_size"])
    for net, name, prefix in ((netg, "netG.pth", "netg"), (netd, "netD.pth", "netd")):
        checkpoint = torch.load(os.path.join(exported, name), map_location="cpu")
        check(set(checkpoint) == {"epoch", "state_dict"}, f"{name} keys {set(checkpoint)}")
        check(checkpoint["epoch"] == 3, f"{name} epoch {checkpoint['epoch']} (the converter recorded 3)")
        net.load_state_dict(checkpoint["state_dict"], strict=True)
        for key, value in net.state_dict().items():
            check(np.array_equal(value.numpy(), model.state_dict(prefix)[key]), f"{name} {key} equals the file")

    # A grey checkpoint converts without --nc, and --calibrate stores a real threshold.
    if cli:
        normal_images(os.path.join(work, "normal"), 12, 2)
        calibrated = os.path.join(work, "calibrated.safetensors")
        out = subprocess.run([sys.executable, os.path.join(HERE, "convert_official_weights.py"), "--netg",
                              os.path.join(exported, "netG.pth"), "--netd", os.path.join(exported, "netD.pth"),
                              "--out", calibrated, "--calibrate", "folder:" + os.path.join(work, "normal"),
                              "--cli", cli], capture_output=True, text=True)
        check(out.returncode == 0, f"convert --calibrate failed: {out.stdout}{out.stderr}")
        d = sm.read_model(calibrated).detector
        check(d["threshold_source"] == "calibrated_validation_quantile" and d["threshold"] > 0,
              f"calibrated threshold {d['threshold']} ({d['threshold_source']})")
        wrong = subprocess.run([sys.executable, os.path.join(HERE, "convert_official_weights.py"), "--netg",
                                os.path.join(exported, "netG.pth"), "--netd", os.path.join(exported, "netD.pth"),
                                "--nc", "3", "--out", os.path.join(work, "wrong.safetensors")],
                               capture_output=True, text=True)
        check(wrong.returncode != 0 and "disagrees" in wrong.stderr, f"--nc 3 on grey weights: {wrong.stderr}")
    print("round trip: OK")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("reader", "round-trip"), required=True)
    p.add_argument("--cli", default=None, help="the built skipganomaly tool (build/tools/skipganomaly)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        (part_reader if args.part == "reader" else part_round_trip)(args.cli, work)


if __name__ == "__main__":
    main()
