"""Export trained FFL models: sub-networks for Keras apps, SavedModels for TF Serving,
LiteRT models for phones and edge devices."""

from keras_ffl.export.exporter import (
    ExportResult,
    ExportVerificationError,
    export_model_dir,
    export_savedmodels,
    load_checkpoint,
)
from keras_ffl.export.extraction import extract_fused, extract_subnetwork
from keras_ffl.export.litert import (
    LiteRTConversionError,
    LiteRTFormat,
    LiteRTVerification,
    export_litert,
)

__all__ = [
    "ExportResult",
    "ExportVerificationError",
    "export_model_dir",
    "export_savedmodels",
    "extract_fused",
    "extract_subnetwork",
    "export_litert",
    "LiteRTConversionError",
    "LiteRTFormat",
    "LiteRTVerification",
    "load_checkpoint",
]
