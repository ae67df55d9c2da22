"""Training methods, found by name: FFL and the baselines the paper compares it with.

Every module of this package defines one method (a `MultiHeadModel` subclass
decorated with `@register_method`); importing the package imports them all, so a
new method is one new module here and nothing else.
"""

import importlib
import pkgutil

from keras_ffl.methods.base import (
    MultiHeadModel,
    Option,
    get_method,
    method_names,
    register_method,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MultiHeadModel", "Option", "get_method", "method_names", "register_method"]
