"""keras_ffl: Feature Fusion Learning (Kim et al., ICPR 2020) in Keras 3 on TensorFlow.

The names below are attributes of the package loaded on first use (PEP 562), so
that `import keras_ffl` and modules free of TensorFlow (`keras_ffl.run_dir`,
`keras_ffl.heads`' names) stay cheap for tools that only read results. The
Keras classes that saved models name (layers, models, the optimizer) are
registered with Keras as soon as Keras itself is imported, so that
`keras.saving.load_model` opens keras_ffl's checkpoints and exports after
`import keras_ffl` whichever of the two was imported first.
"""

import importlib
import importlib.abc
import importlib.machinery
import os
import sys

# TensorFlow's oneDNN CPU kernels train these networks much faster than its default
# Eigen kernels (docs/PERFORMANCE.md), but TensorFlow turns them on by default only on
# CPUs with AVX-512 VNNI/BF16 or AMX. The switch is read when TensorFlow is first
# imported, so it only takes effect if keras_ffl is imported first (as the command
# line does); an explicit TF_ENABLE_ONEDNN_OPTS=0 is respected.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

#: The public names, by the module that defines them.
_EXPORTS = {
    "keras_ffl.callbacks": ("DistillationRampUp",),
    "keras_ffl.fusion": ("FusionBlock",),
    "keras_ffl.losses": ("cross_entropy", "softened_kl"),
    "keras_ffl.methods": ("MultiHeadModel", "get_method", "method_names"),
    "keras_ffl.methods.ffl": ("FFLModel", "build_ffl_network", "ffl_loss_terms", "ffl_sgd"),
    "keras_ffl.models": (
        "Architecture",
        "CifarResNet",
        "ImageNetResNet",
        "WideResNet",
        "get_architecture",
    ),
    "keras_ffl.network": ("build_subnetwork", "build_subnetworks"),
    "keras_ffl.optimizer": ("CoupledSGD", "paper_sgd"),
    "keras_ffl.schedules": ("sigmoid_rampup", "step_learning_rate"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


#: The modules whose import registers keras_ffl's serializable Keras classes.
_KERAS_OBJECT_MODULES = ("keras_ffl.batch_norm", "keras_ffl.methods")


def _register_keras_objects():
    for module in _KERAS_OBJECT_MODULES:
        importlib.import_module(module)


class _RegisterAfterKerasImport(importlib.abc.MetaPathFinder):
    """Runs `_register_keras_objects` once Keras is imported and no keras_ffl module is
    part-way through its own import.

    Registering imports keras_ffl's modules; doing so while one of them is still
    executing (it imported Keras first) would import it again half-made, so the
    registration waits for the outermost keras_ffl import to finish.
    """

    def __init__(self):
        self.importing = 0

    def find_spec(self, name, path, target=None):
        own = name.startswith("keras_ffl.")
        if name != "keras" and not own:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            self.importing += own
            try:
                exec_module(module)
            finally:
                self.importing -= own
            self.register_when_ready(keras_imported=not own)

        spec.loader.exec_module = exec_then_register
        return spec

    def register_when_ready(self, keras_imported):
        """Registers unless a keras_ffl import is under way or Keras is not (fully) imported;
        `keras_imported` says Keras itself has just finished executing."""
        keras = sys.modules.get("keras")
        if self.importing or keras is None:
            return
        if not keras_imported and getattr(keras.__spec__, "_initializing", False):
            return
        if self in sys.meta_path:
            sys.meta_path.remove(self)
            _register_keras_objects()


if "keras" in sys.modules:
    _register_keras_objects()
else:
    sys.meta_path.insert(0, _RegisterAfterKerasImport())


def __getattr__(name):
    """Imports the module defining public name `name` when it is first used."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
