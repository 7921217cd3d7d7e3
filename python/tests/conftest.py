"""Shared fixtures: seeded images and one small model trained once per test run.

The model is tiny on purpose (isize 32, 1 channel, 16 generator and discriminator features,
1 epoch on 40 images: about a second of CPU); the tests check behaviour, not detection quality.
"""

import os

import numpy as np
import pytest

# CTest names the extension it built; where that is not built, the tests report skipped (77).
MODULE = os.environ.get("SKIPGANOMALY_PYTHON_MODULE")
NOT_BUILT = bool(MODULE) and not os.path.exists(MODULE)
if not NOT_BUILT:
    import skipganomaly


def pytest_sessionstart(session):
    if NOT_BUILT:
        pytest.exit(f"skipped: {MODULE} is not built", returncode=77)


def blobs(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 28, 28) uint8: a bright Gaussian blob at a random place, on noise."""
    yy, xx = np.mgrid[0:28, 0:28]
    out = np.empty((count, 28, 28), np.uint8)
    for i in range(count):
        cx, cy = rng.uniform(8, 20, 2)
        value = 230 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18) + rng.uniform(0, 20, (28, 28))
        out[i] = np.minimum(255, value).astype(np.uint8)
    return out


def checkerboards(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 28, 28) uint8 checkerboards of random cell size: anomalies for the blob model."""
    yy, xx = np.mgrid[0:28, 0:28]
    out = np.empty((count, 28, 28), np.uint8)
    for i in range(count):
        cell = int(rng.integers(2, 6))
        dark = rng.integers(0, 40, (28, 28))
        out[i] = np.where(((xx // cell + yy // cell) % 2) == 1, 255, dark).astype(np.uint8)
    return out


SMALL_MODEL = dict(image_size=32, channels=1, epochs=1, batch_size=8, validation_fraction=0.2,
                   generator_features=16, discriminator_features=16, seed=1)


@pytest.fixture(scope="session")
def data():
    rng = np.random.default_rng(3)
    return {"train": blobs(rng, 40), "normal": blobs(rng, 12), "abnormal": checkerboards(rng, 6)}


@pytest.fixture(scope="session")
def model_path(tmp_path_factory, data):
    detector = skipganomaly.Detector(**SMALL_MODEL)
    detector.fit(data["train"])
    path = str(tmp_path_factory.mktemp("model") / "model.safetensors")
    detector.save(path)
    return path


@pytest.fixture(scope="session")
def detector(model_path):
    return skipganomaly.Detector.load(model_path)


@pytest.fixture(scope="session")
def image_files(tmp_path_factory, data):
    """The normal then the abnormal images as PNG files, in that order."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for kind in ("normal", "abnormal"):
        for i, image in enumerate(data[kind]):
            path = str(folder / f"{kind}{i:02d}.png")
            skipganomaly.save_png(path, image)
            paths.append(path)
    return paths


@pytest.fixture(scope="session", autouse=True)
def importable_in_subprocesses():
    """Processes started by the tests (Dask workers) import skipganomaly from where this one did."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(skipganomaly.__file__)))
    paths = [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
