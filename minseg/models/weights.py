"""Weight files: a Module's state dict to and from ``.safetensors``, the format PyTorch, smp, timm and Hugging Face use.

A ``.safetensors`` file is a JSON header (each tensor's name, dtype, shape and byte range) followed by the raw bytes;
reading one never runs code, unlike a pickled ``.pt`` file. minseg's parameter and buffer names are PyTorch's, so a
file written from a PyTorch model's ``state_dict()`` loads into the minseg model of the same architecture unchanged,
BatchNorm's ``running_mean``, ``running_var`` and ``num_batches_tracked`` included, and the other way round.

``load_weights`` checks every name and shape before it copies anything, and says everything that does not fit at
once. ``strict=False`` loads what fits and returns what it skipped: that is how an ImageNet classifier's checkpoint
fills a segmentation model's encoder, whose classifier ``fc.*`` the encoder does not have, and how a model trained
for other classes starts a fine-tune (its heads do not fit and keep their fresh initial weights).
``compare_weights`` gives the same report without loading.
"""
import os
import tempfile
from typing import NamedTuple

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ..atomic import file_mode

__all__ = ["save_weights", "load_weights", "compare_weights", "LoadReport"]


class LoadReport(NamedTuple):
    """What ``load_weights`` did not load: names in the model only, names in the file only, and the names whose
    shapes differ as (name, shape in the model, shape in the file). All empty means everything loaded."""
    missing_keys: list
    unexpected_keys: list
    mismatched_keys: list


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _own_tensors(module):
    """Name → Tensor for every parameter and buffer, the names ``state_dict`` uses."""
    return dict(list(module.named_parameters()) + list(module.named_buffers()))


def _compare(own, stored):
    """The LoadReport of putting the arrays ``stored`` (name → array) into the tensors ``own`` (name → Tensor)."""
    missing = sorted(name for name in own if name not in stored)        # sorted: easy to scan, the same every time
    unexpected = sorted(name for name in stored if name not in own)
    mismatched = [(name, tuple(own[name].shape), tuple(stored[name].shape))
                  for name in own if name in stored and tuple(own[name].shape) != tuple(stored[name].shape)]
    return LoadReport(missing, unexpected, mismatched)


def _describe(report):
    parts = []
    if report.missing_keys:
        parts.append(f"missing keys (in the model, not in the file): {', '.join(report.missing_keys)}")
    if report.unexpected_keys:
        parts.append(f"unexpected keys (in the file, not in the model): {', '.join(report.unexpected_keys)}")
    if report.mismatched_keys:
        parts.append("shape mismatches: " + ", ".join(f"{name} is {model_shape} in the model but {file_shape} "
                                                      f"in the file" for name, model_shape, file_shape
                                                      in report.mismatched_keys))
    return "; ".join(parts)


def _prefix_hint(own, stored):
    """What to do when no name fits: usually one side's names carry a prefix such as "encoder."."""
    for file_name in stored:
        for own_name in own:
            if file_name.endswith("." + own_name):   # a whole model's file offered to its encoder
                prefix = file_name[:-len(own_name)]
                return (f"the file's names carry the prefix {prefix!r} (e.g. {file_name!r} for {own_name!r}): "
                        f"load it into the module that holds this one as .{prefix.rstrip('.')}")
            if own_name.endswith("." + file_name):   # an encoder's file offered to the whole model
                prefix = own_name[:-len(file_name)]
                return (f"the module's names carry the prefix {prefix!r} (e.g. {own_name!r} for {file_name!r}): "
                        f"load the file into module.{prefix.rstrip('.')}")
    return f"the file has {', '.join(list(stored)[:3])}, ...; the module expects {', '.join(list(own)[:3])}, ..."


def _read(path):
    """The file's arrays by name; a missing or unreadable file gets an error that names it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_weights: path must be an existing .safetensors file, got {path!r}, "
                                "which does not exist")
    try:
        return load_file(path)
    except (SafetensorError, ValueError, TypeError, OSError) as error:
        raise ValueError(f"load_weights: {path!r} is not a readable .safetensors file ({error}); "
                         "is it complete, and a .safetensors file rather than a pickled .pt/.pth?") from None


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
def save_weights(module, path):
    """Write ``module.state_dict()`` to ``path`` as .safetensors, atomically: a crash leaves the old file or none.

    The arrays are written under their PyTorch names, so ``torch``'s ``safetensors.torch.load_file`` reads them too.
    """
    path = os.fspath(path)
    state = {name: np.asarray(array, order="C") for name, array in module.state_dict().items()}
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".weights-", suffix=".safetensors.tmp", dir=directory)
    os.close(handle)
    try:
        save_file(state, temporary)
        os.chmod(temporary, file_mode())  # mkstemp's 0o600 -> what open() would give
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def compare_weights(module, path):
    """The ``LoadReport`` of loading ``path`` into ``module``, without loading anything: what a caller decides
    from (a whole model's file or an encoder's, heads sized for another class count)."""
    return _compare(_own_tensors(module), _read(os.fspath(path)))


def load_weights(module, path, strict=True):
    """Copy the arrays of the .safetensors file ``path`` into ``module``'s parameters and buffers of the same names.

    ``strict=True``: every name and shape must match, or nothing is loaded and the ValueError lists every missing
    key, unexpected key and shape mismatch. ``strict=False``: load the names whose shapes match, skip the rest.
    Either way the returned ``LoadReport`` lists what was not loaded. Arrays take the model's dtype (a float64 file
    loads into a float32 model as float32).
    """
    path = os.fspath(path)
    stored = _read(path)
    own = _own_tensors(module)
    report = _compare(own, stored)
    if strict and any(report):
        raise ValueError(f"load_weights: {path!r} does not fit {type(module).__name__}: {_describe(report)}; "
                         "pass strict=False to load only the tensors that match")
    skipped = {name for name, _, _ in report.mismatched_keys}
    if stored and len(report.unexpected_keys) + len(skipped) == len(stored):
        raise ValueError(f"load_weights: no tensor in {path!r} fits {type(module).__name__}; "
                         f"{_prefix_hint(own, stored)}")
    module.load_state_dict({name: array for name, array in stored.items() if name in own and name not in skipped},
                           strict=False)
    return report
