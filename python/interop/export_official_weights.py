#!/usr/bin/env python3
"""Exports a skipganomaly model file as the official Skip-GANomaly checkpoints.

Writes netG.pth and netD.pth as the official code's save_weights does:
torch.save({'epoch': E, 'state_dict': network.state_dict()}), so that
samet-akcay/skip-ganomaly loads them with --load_weights (or load_state_dict on its
UnetGenerator / Discriminator built with the same isize, nc, ngf, ndf, nz, which are printed).
Reading the model file needs numpy only (skipganomaly_model.py beside it); writing .pth needs
torch (Debian: python3-torch; run with /usr/bin/python3).

The tensors keep the model file's order, which is the state-dict order, and E is the epoch
the converter recorded (0 for models trained here), so that
    export_official_weights.py model.safetensors DIR
    convert_official_weights.py --netg DIR/netG.pth --netd DIR/netD.pth --out again.safetensors
gives again.safetensors bit for bit equal to model.safetensors when that file came from the
converter (check_official_round_trip.py beside it tests this). A model trained here converts
back with the same weights but placeholder metadata (no threshold, no statistics). The
rotation head of a robust_rotation model (netd.rotation.*) is left out: the official
discriminator has none, and the official code scores with 0.9 x reconstruction + 0.1 x latent.

Example:
  /usr/bin/python3 python/interop/export_official_weights.py model.safetensors weights/
"""
import argparse
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import skipganomaly_model  # noqa: E402


def export(model_path, folder):
    import torch

    model = skipganomaly_model.read_model(model_path)
    if model.metadata.get("format") != "skipganomaly":
        raise SystemExit(f"{model_path}: expected a skipganomaly model file, found format {model.metadata.get('format')!r}")
    source = model.metadata.get("source") or {}
    os.makedirs(folder, exist_ok=True)
    written = []
    for network, file_name, epoch_key in (("netg", "netG.pth", "netg_epoch"), ("netd", "netD.pth", "netd_epoch")):
        state = OrderedDict()
        for key, array in model.state_dict(network).items():
            if key.startswith("rotation."):  # the robust_rotation recipe's head: the official D has none
                continue
            state[key] = torch.from_numpy(array.copy())
        epoch = source.get(epoch_key)
        path = os.path.join(folder, file_name)
        torch.save({"epoch": 0 if epoch is None else epoch, "state_dict": state}, path)
        written.append(path)
    return model.architecture, written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="skipganomaly model file (.safetensors)")
    p.add_argument("folder", help="where netG.pth and netD.pth go")
    args = p.parse_args(argv)
    a, written = export(args.model, args.folder)
    print(f"wrote {', '.join(written)}: official options --isize {a['image_size']} --nc {a['channels']} "
          f"--ngf {a['generator_features']} --ndf {a['discriminator_features']} --nz {a['latent_size']}")


if __name__ == "__main__":
    main()
