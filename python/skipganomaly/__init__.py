"""Skip-GANomaly image anomaly detection: train on normal images, score new ones.

    import numpy as np
    import skipganomaly

    detector = skipganomaly.Detector(image_size=32, channels=1, epochs=2)
    detector.fit(normal_images)             # uint8 (N, H, W[, C]) or a list of (H, W[, C])
    result = detector.score(image)          # uint8 (H, W[, C]) or float32 (C, H, W) in [-1, 1]
    result.score, result.is_anomaly, result.normalized_score
    detector.save("model.safetensors")
    shipped = skipganomaly.Detector.load("model.safetensors")

Detector(**options) takes the keywords of DEFAULT_OPTIONS, whose values are the C++
library's defaults (DetectorOptions). Errors derive from SkipganomalyError; bad arguments are
also ValueErrors, file errors OSErrors. See python/README.md.
"""

from ._skipganomaly import (
    DEFAULT_OPTIONS,
    CalibrationResult,
    Detector,
    DeviceError,
    EpochSummary,
    FitReport,
    FormatError,
    InvalidArgument,
    IoError,
    NumericalError,
    OutOfMemoryError,
    ScoreResult,
    SkipganomalyError,
    TrainingProgress,
    cpu_threads,
    cuda_available,
    load_image,
    save_png,
    set_cpu_threads,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "CalibrationResult",
    "Detector",
    "DeviceError",
    "EpochSummary",
    "FitReport",
    "FormatError",
    "InvalidArgument",
    "IoError",
    "NumericalError",
    "OutOfMemoryError",
    "ScoreResult",
    "SkipganomalyError",
    "TrainingProgress",
    "cpu_threads",
    "cuda_available",
    "load_image",
    "save_png",
    "set_cpu_threads",
]
