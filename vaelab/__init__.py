"""vaelab: train, measure and look at AutoEncoders and Variational AutoEncoders.

The public names are imported on first use (PEP 562), so that ``vaelab --help`` and argument errors answer
without importing torch.
"""

import importlib
import sys
import types

# public name -> the module that defines it
_HOMES = {
    "AutoEncoder": "vaelab.models",
    "ImageData": "vaelab.data",
    "Run": "vaelab.runs",
    "RunConfig": "vaelab.config",
    "VAE": "vaelab.models",
    "VaelabError": "vaelab.errors",
    "build_model": "vaelab.models",
    "load_data": "vaelab.data",
    "load_run": "vaelab.runs",
    "reconstruct": "vaelab.models",
    "sample_prior": "vaelab.models",
    "train": "vaelab.train",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule vaelab.train binds it as the attribute `train`; the public `vaelab.train` is the
        # function, as it was when this file imported everything eagerly.
        if not (name in _HOMES and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
