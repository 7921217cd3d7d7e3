"""skipganomaly.distributed on a two-process LocalCluster (loopback only): the same scores as
one process, bit for bit, in the order of the paths."""

import logging

import pytest

import skipganomaly
from skipganomaly.distributed import FileScore, detector_for, model_sha256, score_bag, score_files

distributed = pytest.importorskip("distributed")


def test_detector_is_loaded_once_per_process(model_path):
    assert detector_for(model_path) is detector_for(model_path)


def test_two_worker_processes_score_as_one_process(model_path, image_files):
    detector = skipganomaly.Detector.load(model_path)
    expected = [FileScore(p, r.score, r.is_anomaly)
                for p, r in ((p, detector.score(skipganomaly.load_image(p))) for p in image_files)]
    assert score_files(image_files, model_path) == expected

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        future = client.compute(score_bag(image_files, model_path, npartitions=6))
        rows = future.result(timeout=120)
        # Each worker process that took part loaded the model once, for itself.
        loaded = client.run(lambda: len(__import__("skipganomaly.distributed").distributed._detectors))
    assert rows == expected
    assert len(loaded) == 2 and 1 <= sum(loaded.values()) <= 2 and max(loaded.values()) == 1


def test_a_worker_with_another_model_file_refuses(tmp_path, model_path, image_files):
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(open(model_path, "rb").read())
    assert score_files(image_files[:1], str(copy), sha256=model_sha256(model_path))[0].path == image_files[0]
    with pytest.raises(ValueError, match="has SHA-256 .* expected 0+ \\(the file the client saw\\)"):
        score_files(image_files[:1], str(copy), sha256="0" * 64)
