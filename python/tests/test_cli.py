"""Python and the command-line tool give the same scores for the same model and image files.

Bit for bit: the tool scores its images in one pass of score(span) (up to score_batch_size),
as score_batch does here, and prints each float as the shortest decimal that reads back as the
same double, so the JSON numbers compare exactly. SKIPGANOMALY_CLI names the tool (CTest sets it).
"""

import json
import os
import subprocess

import pytest

import skipganomaly

CLI = os.environ.get("SKIPGANOMALY_CLI")


@pytest.mark.skipif(not CLI, reason="SKIPGANOMALY_CLI is not set (the tool is not built)")
def test_scores_equal_the_command_line_tools(model_path, image_files):
    run = subprocess.run([CLI, "score", "--model", model_path, "--threads", "1", *image_files],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["path"] for line in lines] == image_files

    detector = skipganomaly.Detector.load(model_path)
    results = detector.score_batch([skipganomaly.load_image(path) for path in image_files])
    for line, result in zip(lines, results):
        assert line["score"] == result.score, line["path"]
        assert line["normalized_score"] == result.normalized_score
        assert line["reconstruction_error"] == result.reconstruction_error
        assert line["latent_error"] == result.latent_error
        assert line["is_anomaly"] == result.is_anomaly
        assert line["threshold"] == result.threshold
