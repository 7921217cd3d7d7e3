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
file system, or a copy at the same place on each host).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Iterable, List, NamedTuple, Tuple

from . import Detector, load_image

if TYPE_CHECKING:
    import dask.bag

__all__ = ["FileScore", "detector_for", "score_files", "score_bag"]


class FileScore(NamedTuple):
    """One image file's result."""

    path: str
    score: float
    is_anomaly: bool


_lock = threading.Lock()
# (absolute path, device) -> ((size, mtime_ns), Detector): at most one model version per path.
_detectors: dict[Tuple[str, str], Tuple[Tuple[int, int], Detector]] = {}


def detector_for(model_path: str, device: str = "auto") -> Detector:
    """This process's Detector for model_path, loaded on first use and again when the file
    changes (size or modification time). Safe from many threads: they share one Detector,
    whose score() may run from all of them at once."""
    key = (os.path.abspath(model_path), device)
    stat = os.stat(model_path)
    version = (stat.st_size, stat.st_mtime_ns)
    with _lock:
        cached = _detectors.get(key)
        if cached is None or cached[0] != version:
            cached = (version, Detector.load(model_path, device=device))
            _detectors[key] = cached
        return cached[1]


def score_files(paths: Iterable[str], model_path: str, device: str = "auto") -> List[FileScore]:
    """Scores each image file alone with this process's Detector for model_path. An image that
    cannot be read raises skipganomaly.IoError or FormatError naming it."""
    detector = detector_for(model_path, device)
    results = []
    for path in paths:
        result = detector.score(load_image(path))
        results.append(FileScore(path, result.score, result.is_anomaly))
    return results


def score_bag(paths: "Iterable[str] | dask.bag.Bag", model_path: str, *, npartitions: int | None = None,
              device: str = "auto") -> "dask.bag.Bag":
    """A dask bag of FileScore, one per path, in the order of paths: score_files mapped over the
    partitions of paths (a sequence, cut into npartitions, or a dask bag of paths as it is).
    .compute() runs it on the current Client's cluster; .to_dataframe() makes a dask
    dataframe of it."""
    import dask.bag as db

    if not isinstance(paths, db.Bag):
        paths = list(paths)
        paths = db.from_sequence(paths, npartitions=npartitions or max(1, min(len(paths), 100)))
    return paths.map_partitions(score_files, model_path, device)
