#!/usr/bin/env python3
"""Converts the official Skip-GANomaly weights (samet-akcay/skip-ganomaly) into our model file.

The official training saves each network as torch.save({'epoch': E, 'state_dict': sd}) in
netG.pth and netD.pth (keys prefixed 'module.' when the network was wrapped in
DataParallel). Our model file (src/model_file.hpp, docs/model-format.md) is a safetensors
file: an 8-byte little-endian header length, a JSON header, raw little-endian tensor data.
Its tensors are the state-dict entries named "netg." + key and "netd." + key (F32; each
num_batches_tracked I64 with shape []); its "__metadata__" holds JSON strings that
sga::Detector::load requires:

  format "skipganomaly", format_version "1", architecture {image_size, channels,
  generator_features, discriminator_features, latent_size}, detector {trained, threshold,
  threshold_source, validation_statistics, score_weights, scoring_mode, preprocessing,
  training {...}}, and checksum "crc32:XXXXXXXX": the zlib CRC-32 of the whole file with
  those 8 hex digits read as '0'.

The official code keeps no anomaly threshold and no score statistics with its weights, so
the file gets a placeholder threshold (--threshold, default 0.0: every image is reported
anomalous until the threshold is calibrated, e.g. with Detector::calibrate or
set_threshold) and threshold_source says so. The training block records the official
defaults (batch 64, lr 2e-4, beta1 0.5, w_adv 1, w_con 50, w_lat 1); it only matters to
someone who resumes training from the file.

The architecture (isize, nc, ngf, ndf, nz) is read from the tensors' shapes; an option
given explicitly must agree with them. --calibrate DATA then runs
`skipganomaly calibrate --model OUT --data DATA` so the file gets a real threshold (and a
pixel threshold) from normal images the model was not trained on.

Example:
  /usr/bin/python3 python/interop/convert_official_weights.py --netg netG.pth --netd netD.pth \
      --out model.safetensors --calibrate folder:held_out_normal_images/

Only reading the .pth files needs torch; writing uses struct, json and zlib.
"""
import argparse
import json
import math
import os
import struct
import sys
import zlib
from collections import OrderedDict

FORMAT_NAME = "skipganomaly"
FORMAT_VERSION = 1
CHECKSUM_PREFIX = "crc32:"
PLACEHOLDER_THRESHOLD = 0.0
PLACEHOLDER_SOURCE = "placeholder_uncalibrated"
SCORING_MODES = ("running_statistics", "official_batch_statistics")

_DTYPES = {"float32": "F32", "int64": "I64"}


def safetensors_bytes(tensors, metadata, checksum=False):
    """The bytes of a safetensors file.

    tensors: ordered (name, numpy array) pairs, float32 or int64 (written little-endian).
    metadata: str -> str, stored as "__metadata__".
    checksum: when true, metadata gets "checksum": "crc32:" + the CRC-32 of the whole
    file computed with its 8 digits as '0' (our model file's rule).
    """
    import numpy as np

    meta = OrderedDict((k, v) for k, v in metadata.items())
    for key, value in meta.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata {key!r} must be a string, found {type(value).__name__}")
    if checksum:
        meta["checksum"] = CHECKSUM_PREFIX + "0" * 8
    header = OrderedDict()
    header["__metadata__"] = meta
    blobs = []
    offset = 0
    for name, array in tensors:
        array = np.asarray(array)
        dtype = _DTYPES.get(array.dtype.name)
        if dtype is None:
            raise TypeError(f"tensor {name!r}: unsupported dtype {array.dtype}")
        blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[name] = OrderedDict(
            [("dtype", dtype), ("shape", [int(d) for d in array.shape]), ("data_offsets", [offset, offset + len(blob)])])
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"), allow_nan=False)
    text += " " * ((8 - len(text) % 8) % 8)  # keep the data 8-byte aligned, as our writer does
    head = text.encode("utf-8")
    data = bytearray(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    if checksum:
        needle = ('"' + CHECKSUM_PREFIX).encode("ascii")
        at = 8 + head.index(needle) + len(needle)
        data[at:at + 8] = b"%08x" % (zlib.crc32(bytes(data)) & 0xFFFFFFFF)
    return bytes(data)


def load_state_dict(path):
    """The state dict of an official netG.pth / netD.pth, without a DataParallel prefix."""
    import torch

    checkpoint = torch.load(path, map_location="cpu")
    epoch = None
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        epoch = checkpoint.get("epoch")
        state = checkpoint["state_dict"]
    elif isinstance(checkpoint, dict) and all(torch.is_tensor(v) for v in checkpoint.values()):
        state = checkpoint  # a bare state dict
    else:
        raise SystemExit(f"{path}: expected torch.save({{'epoch': ..., 'state_dict': ...}}), found {type(checkpoint).__name__}")
    out = OrderedDict()
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if not torch.is_tensor(value):
            raise SystemExit(f"{path}: state-dict entry {key!r} is not a tensor")
        out[key] = value.detach().cpu()
    return out, epoch


def expect_shape(state, key, shape, path):
    if key not in state:
        raise SystemExit(f"{path}: expected tensor {key!r} for the given architecture, found none "
                         f"(keys start {list(state)[:4]})")
    found = tuple(state[key].shape)
    if found != tuple(shape):
        raise SystemExit(f"{path}: tensor {key!r} has shape {found}, expected {tuple(shape)}; "
                         "check --isize/--nc/--ngf/--ndf/--nz")


def check_architecture(netg, netd, args):
    """Cheap early checks with clear messages; Detector::load checks every name and shape."""
    expect_shape(netg, "model.model.0.weight", (args.ngf, args.nc, 4, 4), args.netg)
    expect_shape(netg, "model.model.3.weight", (2 * args.ngf, args.nc, 4, 4), args.netg)
    # The U-Net nests one block per halving: the innermost (8 ngf -> 8 ngf, its up-norm at
    # index 4) sits log2(isize) - 1 levels below the outermost.
    downs = args.isize.bit_length() - 1
    innermost = "model.model.1.model." + "3.model." * (downs - 2)
    expect_shape(netg, innermost + "1.weight", (8 * args.ngf, 8 * args.ngf, 4, 4), args.netg)
    expect_shape(netg, innermost + "4.running_mean", (8 * args.ngf,), args.netg)
    expect_shape(netd, f"feat.initial-conv-{args.nc}-{args.ndf}.weight", (args.ndf, args.nc, 4, 4), args.netd)
    width, size = args.ndf, args.isize // 2
    while size > 4:
        width, size = width * 2, size // 2
    expect_shape(netd, f"feat.final-{width}-1-conv.weight", (args.nz, width, 4, 4), args.netd)
    expect_shape(netd, "clas.classifier.weight", (1, args.nz, 3, 3), args.netd)


def network_tensors(prefix, state, path):
    import numpy as np
    import torch

    out = []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            array = np.asarray(value.to(torch.int64).reshape(()).numpy(), dtype=np.int64)
        elif value.is_floating_point():
            array = value.to(torch.float32).numpy()
            if not np.all(np.isfinite(array)):
                raise SystemExit(f"{path}: tensor {key!r} holds non-finite values")
        else:
            raise SystemExit(f"{path}: tensor {key!r} has unexpected dtype {value.dtype}")
        out.append((prefix + key, array))
    # Files from PyTorch < 0.4.1 have no num_batches_tracked: our loader wants one per norm.
    for key in list(state):
        if key.endswith("running_mean"):
            tracked = key[: -len("running_mean")] + "num_batches_tracked"
            if tracked not in state:
                out.append((prefix + tracked, np.zeros((), dtype=np.int64)))
    return out


def detector_metadata(args):
    return OrderedDict([
        ("trained", True),
        ("threshold", args.threshold),
        ("threshold_source", args.threshold_source),
        # The official checkpoint has no held-out scores: empty statistics.
        ("validation_statistics", OrderedDict([("count", 0), ("min", 0.0), ("max", 0.0), ("mean", 0.0), ("std", 0.0),
                                               ("quantile_levels", []), ("quantile_values", [])])),
        ("score_weights", OrderedDict([("reconstruction", 0.9), ("latent", 0.1)])),
        ("scoring_mode", args.scoring_mode),
        ("preprocessing", OrderedDict([("image_size", args.isize), ("channels", args.nc), ("resize", "pil_bilinear"),
                                       ("gray_conversion", "itu_r_601_2"), ("scale", "x / 127.5 - 1")])),
        ("training", OrderedDict([
            ("epochs", 15), ("batch_size", 64), ("learning_rate", 2e-4), ("beta1", 0.5), ("beta2", 0.999),
            ("adam_epsilon", 1e-8), ("w_adv", 1.0), ("w_con", 50.0), ("w_lat", 1.0),
            ("discriminator_reinit_threshold", 1e-5), ("validation_fraction", 0.1), ("threshold_quantile", 0.99),
            ("seed", 0)])),
    ])


def infer_architecture(netg, netd, args):
    """Fills the architecture options left unset from the tensors' shapes:
    netG model.model.0.weight is (ngf, nc, 4, 4); the U-Net nests one block per halving below
    the outermost, "model.model.1.model." + "3.model." * (log2(isize) - 2) reaching the
    innermost; netD clas.classifier.weight is (1, nz, 3, 3) and
    feat.initial-conv-{nc}-{ndf}.weight is (ndf, nc, 4, 4)."""
    first = "model.model.0.weight"
    if first not in netg or netg[first].dim() != 4:
        raise SystemExit(f"{args.netg}: expected the official UnetGenerator's {first!r}, found keys "
                         f"starting {list(netg)[:4]}")
    ngf, nc = int(netg[first].shape[0]), int(netg[first].shape[1])
    outer = "model.model.1.model."
    depth = 0
    for key in netg:
        if key.startswith(outer):
            rest, k = key[len(outer):], 0
            while rest.startswith("3.model."):
                rest, k = rest[len("3.model."):], k + 1
            depth = max(depth, k)
    isize = 2 ** (depth + 2)
    classifier = "clas.classifier.weight"
    if classifier not in netd:
        raise SystemExit(f"{args.netd}: expected the official discriminator's {classifier!r}, found keys "
                         f"starting {list(netd)[:4]}")
    nz = int(netd[classifier].shape[1])
    initial = [k for k in netd if k.startswith("feat.initial-conv-") and k.endswith(".weight")]
    if len(initial) != 1:
        raise SystemExit(f"{args.netd}: expected one 'feat.initial-conv-NC-NDF.weight', found {initial}")
    ndf = int(netd[initial[0]].shape[0])
    for name, value in (("isize", isize), ("nc", nc), ("ngf", ngf), ("ndf", ndf), ("nz", nz)):
        given = getattr(args, name)
        if given is None:
            setattr(args, name, value)
        elif given != value:
            raise SystemExit(f"--{name} {given} disagrees with the weights, which have {name} {value}")


def calibrate(args):
    """Runs the command-line tool's calibrate on the written file."""
    import shutil
    import subprocess

    cli = args.cli or shutil.which("skipganomaly")
    if cli is None:
        here = os.path.dirname(os.path.abspath(__file__))
        candidate = os.path.join(here, "..", "..", "build", "tools", "skipganomaly")
        cli = candidate if os.path.exists(candidate) else None
    if cli is None:
        raise SystemExit("--calibrate needs the skipganomaly tool: pass --cli PATH (build/tools/skipganomaly)")
    command = [cli, "calibrate", "--model", args.out, "--data", args.calibrate]
    print("running " + " ".join(command))
    result = subprocess.run(command)
    if result.returncode != 0:
        raise SystemExit(f"calibrate failed with exit code {result.returncode}; {args.out} keeps its placeholder threshold")


def convert(args):
    netg, epoch_g = load_state_dict(args.netg)
    netd, epoch_d = load_state_dict(args.netd)
    infer_architecture(netg, netd, args)
    if args.isize < 32 or args.isize & (args.isize - 1):
        raise SystemExit(f"--isize must be a power of two >= 32, found {args.isize}")
    if args.nc not in (1, 3):
        raise SystemExit(f"--nc must be 1 or 3, found {args.nc}")
    if not math.isfinite(args.threshold):
        raise SystemExit("--threshold must be finite")
    check_architecture(netg, netd, args)
    tensors = network_tensors("netg.", netg, args.netg) + network_tensors("netd.", netd, args.netd)
    architecture = OrderedDict([("image_size", args.isize), ("channels", args.nc), ("generator_features", args.ngf),
                                ("discriminator_features", args.ndf), ("latent_size", args.nz)])
    dump = lambda value: json.dumps(value, separators=(",", ":"), allow_nan=False)  # noqa: E731
    metadata = OrderedDict([
        ("format", FORMAT_NAME),
        ("format_version", str(FORMAT_VERSION)),
        ("library_version", "converted"),
        ("architecture", dump(architecture)),
        ("detector", dump(detector_metadata(args))),
        ("source", dump(OrderedDict([("implementation", "samet-akcay/skip-ganomaly"),
                                     ("netg", os.path.basename(args.netg)),
                                     ("netd", os.path.basename(args.netd)),
                                     ("netg_epoch", epoch_g), ("netd_epoch", epoch_d)]))),
    ])
    data = safetensors_bytes(tensors, metadata, checksum=True)
    write_atomically(args.out, data)
    return len(tensors), len(data)


def write_atomically(path, data):
    """A temporary file in the target's folder, flushed and synced, renamed over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, "." + os.path.basename(path) + ".tmp-" + str(os.getpid()))
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--netg", required=True, help="official netG.pth")
    p.add_argument("--netd", required=True, help="official netD.pth")
    inferred = " (default: read from the weights; when given, it must agree with them)"
    p.add_argument("--isize", type=int, default=None, help="image size (official --isize)" + inferred)
    p.add_argument("--nc", type=int, default=None, help="image channels (official --nc)" + inferred)
    p.add_argument("--ngf", type=int, default=None, help="generator features (official --ngf)" + inferred)
    p.add_argument("--ndf", type=int, default=None, help="discriminator features (official --ndf)" + inferred)
    p.add_argument("--nz", type=int, default=None, help="discriminator feature length (official --nz)" + inferred)
    p.add_argument("--threshold", type=float, default=PLACEHOLDER_THRESHOLD,
                   help="anomaly threshold on 0.9*rec + 0.1*lat; the default 0.0 is a placeholder that flags "
                        "every image: calibrate it before use")
    p.add_argument("--threshold-source", default=None,
                   help=f"threshold_source metadata (default: '{PLACEHOLDER_SOURCE}' for the placeholder, "
                        "'manual' for an explicit --threshold)")
    p.add_argument("--scoring-mode", choices=SCORING_MODES, default="running_statistics",
                   help="batch norm when scoring: running statistics (eval mode, default) or the official test()'s "
                        "batch statistics")
    p.add_argument("--out", required=True, help="output model file (.safetensors)")
    p.add_argument("--calibrate", metavar="DATA", default=None,
                   help="after writing, run `skipganomaly calibrate --model OUT --data DATA` (e.g. folder:DIR of "
                        "normal images the model was not trained on) to replace the placeholder threshold")
    p.add_argument("--cli", default=None,
                   help="the skipganomaly tool for --calibrate (default: on PATH, else build/tools/skipganomaly)")
    args = p.parse_args(argv)
    if args.threshold_source is None:
        explicit = any(a == "--threshold" or a.startswith("--threshold=") for a in (argv if argv is not None else sys.argv[1:]))
        args.threshold_source = "manual" if explicit else PLACEHOLDER_SOURCE
    return args


def main(argv=None):
    args = parse_args(argv)
    count, size = convert(args)
    print(f"wrote {args.out}: isize {args.isize}, nc {args.nc}, ngf {args.ngf}, ndf {args.ndf}, nz {args.nz}; "
          f"{count} tensors, {size} bytes; threshold {args.threshold} ({args.threshold_source})")
    if args.calibrate:
        calibrate(args)


if __name__ == "__main__":
    main()
