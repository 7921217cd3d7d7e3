#!/usr/bin/env python3
"""Reads a skipganomaly model file (docs/model-format.md) with numpy only.

Debian has no safetensors package; this needs nothing but numpy (python3-numpy) and the
standard library. The model file is a safetensors file: an 8-byte little-endian header
length, a JSON header ({name: {dtype, shape, data_offsets}}, "__metadata__": {str: str}),
then the raw little-endian tensor data. Our files also carry "checksum": "crc32:XXXXXXXX",
the zlib CRC-32 of the whole file with those 8 digits read as '0'; read_model checks it.

    import skipganomaly_model as sm
    model = sm.read_model("model.safetensors")
    model.architecture              # {'image_size': 32, 'channels': 3, ...}
    model.detector["threshold"]     # the anomaly threshold on 0.9 * rec + 0.1 * lat
    netg = model.state_dict("netg") # OrderedDict of numpy arrays, official key names
    # with PyTorch: netG.load_state_dict({k: torch.from_numpy(v) for k, v in netg.items()})

Run as a script, it prints a summary: python3 python/interop/skipganomaly_model.py model.safetensors
"""
import json
import struct
import sys
import zlib
from collections import OrderedDict

import numpy as np

CHECKSUM_PREFIX = "crc32:"
MAX_HEADER_BYTES = 16 << 20
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I64": np.dtype("<i8")}


class ModelFileError(ValueError):
    """The file is not a well-formed skipganomaly model file; the message says what differs."""


class Model:
    """Tensors (name -> numpy array, in file order) and metadata (JSON values decoded)."""

    def __init__(self, tensors, metadata):
        self.tensors = tensors
        self.metadata = metadata

    @property
    def architecture(self):
        return self.metadata["architecture"]

    @property
    def detector(self):
        return self.metadata.get("detector", {})

    def state_dict(self, network):
        """'netg' or 'netd': that network's tensors without the prefix, as the official
        PyTorch module's state_dict() names them."""
        if network not in ("netg", "netd"):
            raise ValueError(f"network must be 'netg' or 'netd', found {network!r}")
        prefix = network + "."
        return OrderedDict((k[len(prefix):], v) for k, v in self.tensors.items() if k.startswith(prefix))


def _decode(value):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value  # a plain string such as "skipganomaly"


def read_model(path, verify_checksum=True):
    """Reads `path`; raises ModelFileError when it is malformed or its checksum differs."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ModelFileError(f"{path}: expected at least 8 bytes, found {len(data)}")
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > MAX_HEADER_BYTES or 8 + header_length > len(data):
        raise ModelFileError(f"{path}: header length {header_length} does not fit the file's {len(data)} bytes")
    try:
        header = json.loads(data[8:8 + header_length].decode("utf-8"), object_pairs_hook=OrderedDict)
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFileError(f"{path}: the header is not JSON: {e}") from None
    raw_metadata = header.pop("__metadata__", {})
    checksum = raw_metadata.get("checksum")
    if verify_checksum and checksum is not None:
        if not checksum.startswith(CHECKSUM_PREFIX) or len(checksum) != len(CHECKSUM_PREFIX) + 8:
            raise ModelFileError(f"{path}: malformed checksum {checksum!r}")
        needle = ('"' + CHECKSUM_PREFIX).encode("ascii")
        at = data.index(needle, 8, 8 + header_length) + len(needle)
        zeroed = data[:at] + b"0" * 8 + data[at + 8:]
        found = "%08x" % (zlib.crc32(zeroed) & 0xFFFFFFFF)
        if found != checksum[len(CHECKSUM_PREFIX):]:
            raise ModelFileError(f"{path}: checksum mismatch: the file says {checksum[len(CHECKSUM_PREFIX):]}, "
                                 f"its bytes give {found} (the file is damaged)")
    body = memoryview(data)[8 + header_length:]
    tensors = OrderedDict()
    for name, record in header.items():
        dtype = _DTYPES.get(record.get("dtype"))
        if dtype is None:
            raise ModelFileError(f"{path}: tensor {name!r}: expected dtype F32, F16 or I64, found {record.get('dtype')!r}")
        shape = tuple(int(d) for d in record["shape"])
        begin, end = (int(o) for o in record["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not 0 <= begin <= end <= len(body) or end - begin != count * dtype.itemsize:
            raise ModelFileError(f"{path}: tensor {name!r}: offsets [{begin}, {end}) do not hold {shape} {record['dtype']}")
        values = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
        # F16 weights (Detector::save with WeightStorage::Float16) are widened, as the library does.
        tensors[name] = values.astype(np.float32) if record["dtype"] == "F16" else values.astype(dtype.newbyteorder("="))
    metadata = OrderedDict((k, _decode(v)) for k, v in raw_metadata.items())
    return Model(tensors, metadata)


def main(argv):
    if len(argv) != 1:
        print(__doc__)
        return 2
    model = read_model(argv[0])
    a = model.architecture
    d = model.detector
    print(f"{argv[0]}: format {model.metadata.get('format')} v{model.metadata.get('format_version')}, "
          f"written by {model.metadata.get('library_version')}")
    print(f"architecture: image_size {a['image_size']}, channels {a['channels']}, ngf {a['generator_features']}, "
          f"ndf {a['discriminator_features']}, nz {a['latent_size']}")
    print(f"threshold {d.get('threshold')} ({d.get('threshold_source')}), scoring mode {d.get('scoring_mode')}")
    print(f"{len(model.tensors)} tensors, {sum(t.size for t in model.tensors.values())} values")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
