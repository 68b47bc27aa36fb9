"""minseg: semantic segmentation from scratch, in NumPy (and CuPy on a GPU).

Read it in this order: ``autograd`` (Tensor, Function, backward), ``ops`` (the basic
differentiable operations), ``gradcheck``, ``functional`` (convolution, pooling,
normalization, losses), ``nn`` (layers as Modules), ``models``, ``metrics``,
``optim``, ``data``, ``train``, ``predict``, ``colors``, ``viz``; then ``detection`` (the two-stage detector
under the instance models, and their metrics), ``instance_predict`` and ``viz_instances``; ``cuda`` is the only module
that knows the CUDA kernels in ``kernels/``. ``train``, ``predict`` and ``viz`` (which needs
matplotlib) are imported on demand: ``from minseg import train, viz``. ``app`` is the ``minseg``
command line built on all of them; nothing above imports it. Every name here is imported on first use
(PEP 562's module ``__getattr__``), so ``import minseg`` imports neither NumPy nor any module until a name is
used: the ``minseg`` command (``app.console``) starts where Ctrl-C can be caught.
"""
import importlib
import sys
import types

__version__ = "0.1.0"

# A top-level name -> the module that defines it; any other name is a submodule (``minseg.nn``, ``minseg.viz``).
_DEFINED_IN = {"Tensor": "autograd", "Function": "autograd", "no_grad": "autograd", "is_grad_enabled": "autograd",
               "gradcheck": "gradcheck", "GradcheckError": "gradcheck", "cat": "ops", "stack": "ops",
               "manual_seed": "random"}

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError",
           "cat", "stack", "manual_seed", "functional", "nn",
           "metrics", "models", "optim", "data", "detection"]


def __getattr__(name):
    if name in _DEFINED_IN:
        value = getattr(importlib.import_module(f"{__name__}.{_DEFINED_IN[name]}"), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":  # the submodule exists; something it imports does not
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    import pkgutil  # only here: ``import minseg`` imports as little as it can

    return sorted(set(globals()) | set(__all__) | {module.name for module in pkgutil.iter_modules(__path__)})


class _Package(types.ModuleType):
    """Importing the submodule ``minseg.gradcheck`` sets the attribute ``minseg.gradcheck`` to that module; the
    name ``minseg.gradcheck`` is the function, so the function is kept."""

    def __setattr__(self, name, value):
        if name == "gradcheck" and isinstance(value, types.ModuleType):
            value = value.gradcheck
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
