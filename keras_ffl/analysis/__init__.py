"""Looking at trained runs: Grad-CAM per head, calibration, diversity between heads.

`gradcam`, `calibration`, `diversity` and `predictions` compute with NumPy and
TensorFlow; `figures` draws, and `cam_figure` and `report` write pictures and
reports with it, which needs matplotlib (the "plot" extra).
"""

from keras_ffl.analysis.calibration import (
    ReliabilityDiagram,
    expected_calibration_error,
    reliability_diagram,
)
from keras_ffl.analysis.cam_figure import draw_gradcam
from keras_ffl.analysis.diversity import (
    PairDiversity,
    disagreement_rate,
    mean_kl,
    pairwise_diversity,
)
from keras_ffl.analysis.gradcam import cam_heads, grad_cam, uniform_heads
from keras_ffl.analysis.predictions import (
    Predictions,
    TrainedRun,
    load_run,
    load_test_images,
    predict_test_split,
)
from keras_ffl.analysis.report import write_report

__all__ = [
    "PairDiversity",
    "Predictions",
    "ReliabilityDiagram",
    "TrainedRun",
    "cam_heads",
    "disagreement_rate",
    "draw_gradcam",
    "expected_calibration_error",
    "grad_cam",
    "load_run",
    "load_test_images",
    "mean_kl",
    "pairwise_diversity",
    "predict_test_split",
    "reliability_diagram",
    "uniform_heads",
    "write_report",
]
