"""The checkpoint file format: nested dicts of arrays and JSON values <-> one ``.npz`` file.

A checkpoint is an ``.npz`` archive. Every array is stored as an array under a path-like key
(``model/conv.weight``, ``optimizer/state/0/exp_avg``); everything else is one JSON string under
``__json__``: ``{"format": "minseg-checkpoint-v1", "state": ...}``, each array replaced by
``{"__array__": key}``. It is read back with ``allow_pickle=False``, so loading a checkpoint can
never run code; a file that is not such an archive, lacks an array its JSON names, or holds another
format raises ``CheckpointError``. Writing is ``minseg.atomic.atomic_write``'s: a temporary file in the
same folder, flushed and fsynced, renamed over the old file with ``os.replace`` (atomic), so a crash
mid-write leaves the previous checkpoint intact and no partial file.

What a training run puts into the state is ``Learner.state_dict()``'s business (``minseg.train``);
this module only stores and restores it.
"""
import json
import os
import zipfile

import numpy as np

from . import backend
from .atomic import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "mismatch_error", "save_checkpoint", "load_checkpoint",
           "load_checkpoint_description"]

CHECKPOINT_FORMAT = "minseg-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt, or not a minseg checkpoint)."""


def mismatch_error(where, path, expected, error):
    """A ``CheckpointError``: the checkpoint at ``path`` does not fit ``expected``; ``error`` (what loading it
    raised, perhaps a list of a hundred keys) shortened to a readable cause."""
    cause = error.args[0] if isinstance(error, KeyError) and error.args else error
    cause = " ".join(str(cause).split())
    cause = cause if len(cause) <= 200 else cause[:200] + " ..."
    return CheckpointError(f"{where}: {path} does not fit {expected}: {cause}")


# ---------------------------------------------------------------------------------------------
# nested state <-> (JSON tree, arrays)
# ---------------------------------------------------------------------------------------------
def _split_arrays(tree, path, arrays):
    """``tree`` with every array replaced by {"__array__": key}; the arrays go into ``arrays``."""
    if isinstance(tree, dict):
        return {str(key): _split_arrays(value, f"{path}/{key}", arrays) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split_arrays(value, f"{path}/{i}", arrays) for i, value in enumerate(tree)]
    if isinstance(tree, np.generic):  # NumPy scalars are not JSON; they are plain numbers
        return tree.item()
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        key = path.lstrip("/")
        arrays[key] = backend.to_device(tree, "cpu")
        return {"__array__": key}
    return tree


def _join_arrays(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {key: _join_arrays(value, arrays) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_join_arrays(value, arrays) for value in tree]
    return tree


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path, state):
    """Write ``state`` (nested dicts/lists of arrays, numbers, strings) to ``path`` atomically.

    Temporary file in the same folder → fsync → ``os.replace`` (``minseg.atomic``): the rename is atomic, so
    ``path`` always holds either the old checkpoint or the complete new one. Returns the file's size in bytes.
    """
    path = os.fspath(path)
    arrays = {}
    tree = _split_arrays(state, "", arrays)
    arrays["__json__"] = np.array(json.dumps({"format": CHECKPOINT_FORMAT, "state": tree}))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as file:
        np.savez(file, **arrays)
    return os.path.getsize(path)


def _read(path, names=None):
    """The checkpoint's JSON document and its arrays (only ``names``, if given); CheckpointError if damaged."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):  # np.load would try a pickle, and its message would suggest allowing that
        raise CheckpointError(f"load_checkpoint: {path} is not a minseg checkpoint: not an .npz (zip) archive, "
                              "or a truncated one")
    try:
        with np.load(path, allow_pickle=False) as archive:  # pickled object arrays refuse to load
            wanted = archive.files if names is None else [name for name in names if name in archive.files]
            arrays = {key: archive[key] for key in wanted}  # reads (and CRC-checks) every member read
            document = json.loads(str(archive["__json__"]))
    except Exception as error:  # zipfile.BadZipFile, EOFError, KeyError, ValueError, ...
        raise CheckpointError(f"load_checkpoint: {path} is not a readable minseg checkpoint (truncated or "
                              f"corrupt?): {type(error).__name__}: {error}") from error
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT or "state" not in document:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise CheckpointError(f"load_checkpoint: {path} has format {found!r}, expected {CHECKPOINT_FORMAT!r} "
                              "with a state")
    arrays.pop("__json__", None)
    return document["state"], arrays


def _missing_arrays(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return [] if tree["__array__"] in arrays else [str(tree["__array__"])]
        return [key for value in tree.values() for key in _missing_arrays(value, arrays)]
    if isinstance(tree, list):
        return [key for value in tree for key in _missing_arrays(value, arrays)]
    return []


def load_checkpoint(path):
    """The state written by ``save_checkpoint``; ``CheckpointError`` naming the file if it is damaged."""
    tree, arrays = _read(path)
    missing = _missing_arrays(tree, arrays)
    if missing:
        raise CheckpointError(f"load_checkpoint: {os.fspath(path)} lacks the arrays {', '.join(missing[:5])}"
                              f"{' and more' if len(missing) > 5 else ''}; it is damaged or was not written by "
                              "minseg")
    return _join_arrays(tree, arrays)


def load_checkpoint_description(path):
    """The state without reading its arrays (each stays ``{"__array__": key}``): the epoch, history and run
    of a large checkpoint, read in a moment."""
    return _read(path, names=())[0]
