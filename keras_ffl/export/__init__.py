"""Export trained FFL models: sub-networks for Keras apps, SavedModels for TF Serving."""

from keras_ffl.export.exporter import (
    ExportResult,
    ExportVerificationError,
    export_model_dir,
    export_savedmodels,
    load_checkpoint,
)
from keras_ffl.export.extraction import extract_fused, extract_subnetwork

__all__ = [
    "ExportResult",
    "ExportVerificationError",
    "export_model_dir",
    "export_savedmodels",
    "extract_fused",
    "extract_subnetwork",
    "load_checkpoint",
]
