"""The Python Detector: options, numpy input, results, threads, errors, save/load, callbacks."""

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import skipganomaly
from conftest import SMALL_MODEL


def scores(results):
    return [r.score for r in results]


def test_defaults_are_the_cpp_defaults():
    options = skipganomaly.Detector().options
    assert options == skipganomaly.DEFAULT_OPTIONS
    # Spot checks against detector.hpp / networks.hpp, to catch a binding that reads nothing.
    assert options["recipe"] == "robust_rotation"
    assert (options["image_size"], options["channels"], options["epochs"], options["batch_size"]) == (32, 3, 15, 64)
    assert options["learning_rate"] == 0.0002 and options["validation_fraction"] == 0.1
    given = skipganomaly.Detector(**SMALL_MODEL).options
    assert {k: given[k] for k in SMALL_MODEL} == SMALL_MODEL


def test_bad_options_are_refused_with_their_name():
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'.*epochs"):
        skipganomaly.Detector(epoch=2)
    with pytest.raises(skipganomaly.InvalidArgument, match="epochs expects an int, found float 1.5"):
        skipganomaly.Detector(epochs=1.5)
    with pytest.raises(ValueError, match="image_size must be a power of two >= 32, found 48"):
        skipganomaly.Detector(image_size=48)
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        skipganomaly.Detector(recipe="fast")
    with pytest.raises(ValueError, match="seed must not be negative"):
        skipganomaly.Detector(seed=-1)


def test_fit_and_score(detector, data):
    assert detector.is_trained and math.isfinite(detector.threshold)
    result = detector.score(data["normal"][0], anomaly_map=True)
    assert result.is_anomaly == (result.score >= result.threshold)
    assert (result.normalized_score >= 0.5) == result.is_anomaly
    assert result.anomaly_map.shape == (28, 28) and result.anomaly_map.dtype == np.float32
    assert np.all(np.isfinite(result.anomaly_map)) and result.anomaly_map.max() > 0
    assert result.anomaly_mask is None  # not asked for
    batch = detector.score_batch(data["normal"])
    assert len(batch) == 12
    # A batch agrees with each image alone to float rounding (detector.hpp's bound).
    alone = [detector.score(image).score for image in data["normal"]]
    assert np.allclose(scores(batch), alone, rtol=1e-6, atol=1e-4)
    assert "ScoreResult(score=" in repr(result)


def test_images_are_read_in_place_whatever_the_layout(detector, data):
    image = data["normal"][1]
    expected = detector.score(image).score
    # Padded rows (a crop of a larger array) are read without a copy, and score the same.
    canvas = np.zeros((40, 50), np.uint8)
    canvas[5:33, 7:35] = image
    crop = canvas[5:33, 7:35]
    assert not crop.flags.c_contiguous
    assert detector.score(crop).score == expected
    assert detector.score(image[:, :, None]).score == expected  # (H, W, 1)
    # Grey as RGB converts back to the same grey (PIL's luma weights sum to 1 in fixed point).
    assert detector.score(np.repeat(image[:, :, None], 3, axis=2)).score == expected
    # A batch as (N, H, W), (N, H, W, 1) and as a list: the same images, the same bits.
    as_array = scores(detector.score_batch(data["normal"]))
    assert scores(detector.score_batch(data["normal"][:, :, :, None])) == as_array
    assert scores(detector.score_batch(list(data["normal"]))) == as_array


def test_float_chw_input(detector):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (32, 32), dtype=np.uint8)  # the network's size: nothing resized
    # preprocess's own formula, in float32: at the network's size the two inputs are the same samples.
    as_float = (image.astype(np.float32) / np.float32(255)) * np.float32(2) - np.float32(1)
    expected = detector.score(image).score
    assert detector.score(as_float[None]).score == expected  # (1, H, W)
    assert detector.score(as_float).score == expected        # (H, W)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((28, 28), np.float64), "must be uint8 .* or float32 .*, found a float64 array of shape \\(28, 28\\)"),
    (np.zeros((28, 28), np.int16), "found a int16 array"),
    (np.zeros(28, np.uint8), "must be uint8 \\(H, W\\) or \\(H, W, C\\), found a uint8 array of shape \\(28,\\)"),
    (np.zeros((2, 28, 28, 1), np.uint8), "a batch \\(N, H, W, C\\) goes to score_batch"),
    (np.zeros((28, 28, 2), np.uint8), "needs C of 1, 3 or 4, found a uint8 array of shape \\(28, 28, 2\\)"),
    (np.zeros((0, 28), np.uint8), "has no pixels"),
    (np.zeros((28, 56), np.uint8)[:, ::2], "must hold each row's pixels contiguously .*ascontiguousarray"),
    (np.zeros((28, 28, 3), np.uint8)[:, :, ::-1], "contiguously"),
    (np.zeros((1, 28, 28), np.float32).transpose(0, 2, 1)[:, ::2], "must be C-contiguous float32"),
    (np.zeros((2, 28, 28), np.float32), "float32 \\(C, H, W\\) image needs C of 1, 3 or 4"),
    ([[0, 1], [2, 3]], "must be a numpy array, found list"),
])
def test_bad_arrays_get_clear_errors(detector, bad, message):
    with pytest.raises(skipganomaly.InvalidArgument, match=message):
        detector.score(bad)


def test_bad_batches_get_clear_errors(detector, data):
    with pytest.raises(skipganomaly.InvalidArgument, match="holds no images"):
        detector.score_batch(np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(skipganomaly.InvalidArgument, match="holds no images"):
        detector.score_batch([])
    with pytest.raises(skipganomaly.InvalidArgument, match="found a float32 array of shape \\(3, 28, 28\\)"):
        detector.score_batch(data["normal"][:3].astype(np.float32))
    with pytest.raises(skipganomaly.InvalidArgument, match="images\\[1\\] .*found a float64 array"):
        detector.score_batch([data["normal"][0], np.zeros((28, 28))])
    with pytest.raises(ValueError, match="fit: the training set is empty|holds no images"):
        skipganomaly.Detector(**SMALL_MODEL).fit(np.zeros((0, 28, 28), np.uint8))
    assert isinstance(skipganomaly.InvalidArgument("x"), skipganomaly.SkipganomalyError)


def test_many_threads_score_as_one(detector, data):
    images = list(data["normal"]) + list(data["abnormal"])
    alone = [detector.score(image).score for image in images]
    start = threading.Barrier(8)

    def score_all(offset):
        start.wait()
        order = images[offset:] + images[:offset]  # each thread in another order
        got = [detector.score(image).score for image in order]
        return got[-offset:] + got[:-offset] if offset else got

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(score_all, range(8)))
    for got in results:
        assert got == alone  # bit for bit: concurrent callers never change a score


def test_save_and_load_round_trip(tmp_path, detector, data):
    path = str(tmp_path / "copy.safetensors")
    detector.save(path)
    loaded = skipganomaly.Detector.load(path)
    assert loaded.is_trained and loaded.threshold == detector.threshold
    assert loaded.options == detector.options
    assert scores(loaded.score_batch(data["abnormal"])) == scores(detector.score_batch(data["abnormal"]))
    half = str(tmp_path / "half.safetensors")
    detector.save(half, weights="float16")
    assert np.allclose(scores(skipganomaly.Detector.load(half).score_batch(data["normal"])),
                       scores(detector.score_batch(data["normal"])), rtol=1e-2)
    with pytest.raises(skipganomaly.IoError, match="does not exist") as missing:
        skipganomaly.Detector.load(str(tmp_path / "missing.safetensors"))
    assert isinstance(missing.value, OSError)
    (tmp_path / "junk.safetensors").write_bytes(b"not a model at all, just some bytes")
    with pytest.raises(skipganomaly.FormatError):
        skipganomaly.Detector.load(str(tmp_path / "junk.safetensors"))
    with pytest.raises(skipganomaly.InvalidArgument, match="weights expects"):
        detector.save(path, weights="int8")


def test_precision_is_a_setting_that_keeps_float32_bits(tmp_path, detector, data):
    path = str(tmp_path / "copy.safetensors")
    detector.save(path)
    copy = skipganomaly.Detector.load(path)
    float32 = scores(copy.score_batch(data["normal"]))
    copy.precision = "bfloat16"
    assert copy.options["precision"] == "bfloat16"
    rounded = scores(copy.score_batch(data["normal"]))
    if copy.active_precision == "bfloat16":
        assert rounded != float32 and np.allclose(rounded, float32, rtol=0.05)
    else:
        assert rounded == float32
    copy.precision = "float32"
    assert scores(copy.score_batch(data["normal"])) == float32
    with pytest.raises(skipganomaly.InvalidArgument, match="precision"):
        copy.precision = "int4"


def test_training_precision_is_an_option_the_model_keeps(tmp_path, data):
    detector = skipganomaly.Detector(**dict(SMALL_MODEL, training_precision="bfloat16"))
    assert detector.options["training_precision"] == "bfloat16"
    assert skipganomaly.Detector().options["training_precision"] == "float32"
    detector.fit(data["normal"])
    path = str(tmp_path / "bf16_trained.safetensors")
    detector.save(path)
    loaded = skipganomaly.Detector.load(path)
    assert loaded.options["training_precision"] == "bfloat16"
    assert loaded.options["precision"] == "float32"
    with pytest.raises(skipganomaly.InvalidArgument, match="precision"):
        skipganomaly.Detector(training_precision="int4")


def test_untrained_detector_refuses_to_save(tmp_path):
    detector = skipganomaly.Detector(**SMALL_MODEL)
    assert not detector.is_trained
    with pytest.raises(skipganomaly.SkipganomalyError):
        detector.save(str(tmp_path / "untrained.safetensors"))


def test_exception_in_callback_stops_fit_and_propagates(data):
    detector = skipganomaly.Detector(**dict(SMALL_MODEL, epochs=2))
    batches = []

    def on_batch(progress):
        batches.append((progress.epoch, progress.batch))
        if len(batches) == 2:
            raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        detector.fit(data["train"], on_batch=on_batch)
    assert batches == [(1, 1), (1, 2)]  # nothing called after the exception; fit stopped
    assert not detector.is_trained      # cancelled before the first epoch was completed

    # Raised after the first of two epochs: fit stops with that epoch's weights.
    epochs = []

    def on_epoch(summary):
        epochs.append(summary.epoch)
        raise RuntimeError("enough")

    with pytest.raises(RuntimeError, match="enough"):
        detector.fit(data["train"], on_epoch=on_epoch)
    assert epochs == [1] and detector.is_trained
    assert math.isfinite(detector.score(data["normal"][0]).score)

    # The detector is usable again, and callbacks see every batch.
    seen = []
    report = detector.fit(data["train"], on_batch=seen.append, on_epoch=seen.append)
    assert report.epochs_completed == 2 and not report.cancelled
    assert [type(s).__name__ for s in seen].count("EpochSummary") == 2
    assert [s.batch for s in seen if isinstance(s, skipganomaly.TrainingProgress)] == [1, 2, 3, 4] * 2


def test_calibrate_and_masks(model_path, data):
    detector = skipganomaly.Detector.load(model_path)
    normal = detector.calibrate(data["normal"])
    assert normal.rule == "validation_quantile" and normal.normal_images == 12
    assert detector.threshold == normal.threshold
    labelled = detector.calibrate(data["normal"], data["abnormal"])
    assert labelled.rule == "f1_max" and labelled.anomalous_images == 6 and 0 <= labelled.auroc <= 1
    assert detector.pixel_threshold is not None
    result = detector.score(data["abnormal"][0], anomaly_mask=True)
    assert result.anomaly_mask.shape == (28, 28) and result.anomaly_mask.dtype == np.bool_
    assert np.array_equal(result.anomaly_mask, result.anomaly_map >= detector.pixel_threshold)
    assert result.normalized_anomaly_map.shape == (28, 28)
    with pytest.raises(skipganomaly.InvalidArgument, match="not both"):
        detector.calibrate(data["normal"], data["abnormal"], quantile=0.9)


def test_image_files(tmp_path, data):
    path = str(tmp_path / "a.png")
    skipganomaly.save_png(path, data["abnormal"][0])
    assert np.array_equal(skipganomaly.load_image(path), data["abnormal"][0])
    colour = np.random.default_rng(5).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    skipganomaly.save_png(path, colour)
    assert np.array_equal(skipganomaly.load_image(path), colour)
    with pytest.raises(skipganomaly.IoError):
        skipganomaly.load_image(str(tmp_path / "missing.png"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(skipganomaly.FormatError):
        skipganomaly.load_image(str(tmp_path / "bad.png"))


def test_type_stubs_name_what_the_module_has():
    import ast
    import os

    stub = ast.parse(open(os.path.join(os.path.dirname(skipganomaly.__file__), "_skipganomaly.pyi")).read())
    declared = {getattr(node, "name", None) or getattr(getattr(node, "target", None), "id", None) for node in stub.body}
    public = {name for name in dir(skipganomaly._skipganomaly) if not name.startswith("_")}
    assert public <= declared
    detector = next(node for node in stub.body if isinstance(node, ast.ClassDef) and node.name == "Detector")
    init = next(node for node in detector.body if isinstance(node, ast.FunctionDef) and node.name == "__init__")
    assert sorted(arg.arg for arg in init.args.kwonlyargs) == sorted(skipganomaly.DEFAULT_OPTIONS)
    methods = {node.name for node in detector.body if isinstance(node, ast.FunctionDef)}
    assert {name for name in dir(skipganomaly.Detector) if not name.startswith("_")} <= methods | {"threshold", "precision"}
