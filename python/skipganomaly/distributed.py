"""Scoring image files on a Dask cluster, one Detector per worker process.

    from dask.distributed import Client
    from skipganomaly.distributed import score_bag

    client = Client("tcp://scheduler:8786")            # or a LocalCluster
    rows = score_bag(paths, "model.safetensors", npartitions=64).compute()
    # [FileScore(path='a.png', score=0.71, is_anomaly=False), ...] in the order of paths

Each task scores a partition of paths with score_files: the worker process loads the model
once (detector_for keeps it, keyed by the file's path, size and modification time) and scores
every image alone, so a score does not depend on how the paths were partitioned or on which
worker scored them: it equals Detector.score of that image in a single process, bit for bit.
The model file and the images must be readable at the same paths on every worker (a shared
file system, or a copy at the same place on each host); a worker whose model file differs from
the one the client sees refuses to score.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from typing import TYPE_CHECKING, Iterable, List, NamedTuple, Optional, Tuple

from . import Detector, load_image

if TYPE_CHECKING:
    import dask.bag

__all__ = ["FileScore", "detector_for", "model_sha256", "score_files", "score_bag"]


class FileScore(NamedTuple):
    """One image file's result."""

    path: str
    score: float
    is_anomaly: bool


_lock = threading.Lock()
# (absolute path, device) -> ((size, mtime_ns), SHA-256, Detector): one model version per path.
_detectors: dict[Tuple[str, str], Tuple[Tuple[int, int], str, Detector]] = {}


def model_sha256(model_path: str) -> str:
    """The SHA-256 of the model file, in hex: what score_bag checks every worker's copy against."""
    digest = hashlib.sha256()
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detector_for(model_path: str, device: str = "auto", sha256: Optional[str] = None) -> Detector:
    """This process's Detector for model_path, loaded on first use and again when the file
    changes (size or modification time). Safe from many threads: they share one Detector,
    whose score() may run from all of them at once. With sha256, raises ValueError when this
    process's file has other contents (a host with another copy of the model)."""
    key = (os.path.abspath(model_path), device)
    stat = os.stat(model_path)
    version = (stat.st_size, stat.st_mtime_ns)
    with _lock:
        cached = _detectors.get(key)
        if cached is None or cached[0] != version:
            cached = (version, model_sha256(model_path), Detector.load(model_path, device=device))
            _detectors[key] = cached
    if sha256 is not None and cached[1] != sha256:
        raise ValueError(f"{model_path} on {socket.gethostname()} has SHA-256 {cached[1]}, expected {sha256} "
                         "(the file the client saw): every worker needs the same model file")
    return cached[2]


def score_files(paths: Iterable[str], model_path: str, device: str = "auto",
                sha256: Optional[str] = None) -> List[FileScore]:
    """Scores each image file alone with this process's Detector for model_path (checked
    against sha256 when given). An image that cannot be read raises skipganomaly.IoError or
    FormatError naming it."""
    detector = detector_for(model_path, device, sha256)
    results = []
    for path in paths:
        result = detector.score(load_image(path))
        results.append(FileScore(path, result.score, result.is_anomaly))
    return results


def score_bag(paths: "Iterable[str] | dask.bag.Bag", model_path: str, *, npartitions: Optional[int] = None,
              device: str = "auto") -> "dask.bag.Bag":
    """A dask bag of FileScore, one per path, in the order of paths: score_files mapped over the
    partitions of paths (a sequence, cut into npartitions (default: up to 100), or a dask bag
    of paths as it is). Every worker checks that its model file has the contents the client's
    has; the task keys include them, so results Dask holds from an older model are never reused.
    .compute() runs it on the current Client's cluster; .to_dataframe() makes a dask
    dataframe of it."""
    import dask.bag as db

    if not isinstance(paths, db.Bag):
        paths = list(paths)
        paths = db.from_sequence(paths, npartitions=npartitions or max(1, min(len(paths), 100)))
    return paths.map_partitions(score_files, model_path, device, model_sha256(model_path),
                                token="skipganomaly-score")
