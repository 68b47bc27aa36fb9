"""The checkpoint file format: nested dicts of arrays and JSON values <-> one ``.npz`` file.

A checkpoint is an ``.npz`` archive. Every array is stored as an array under a path-like key
(``model/conv.weight``, ``optimizer/state/0/exp_avg``); everything else is one JSON string under
``__json__``: ``{"format": "minseg-checkpoint-v1", "state": ...}``, each array replaced by
``{"__array__": key}``. It is read back with ``allow_pickle=False``, so loading a checkpoint can
never run code. Writing goes to a temporary file in the same folder, is flushed and fsynced, and
is renamed over the old file with ``os.replace`` (atomic), so a crash mid-write leaves the
previous checkpoint intact and no partial file.

What a training run puts into the state is ``Learner.state_dict()``'s business (``minseg.train``);
this module only stores and restores it.
"""
import json
import os
import tempfile

import numpy as np

from . import backend

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "minseg-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt, or not a minseg checkpoint)."""


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


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); Windows has no directory handles to flush."""
    if hasattr(os, "O_DIRECTORY"):
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path, state):
    """Write ``state`` (nested dicts/lists of arrays, numbers, strings) to ``path`` atomically.

    Temporary file in the same folder → fsync → ``os.replace``: the rename is atomic, so
    ``path`` always holds either the old checkpoint or the complete new one.
    """
    path = os.fspath(path)
    arrays = {}
    tree = _split_arrays(state, "", arrays)
    arrays["__json__"] = np.array(json.dumps({"format": CHECKPOINT_FORMAT, "state": tree}))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_folder(folder)


def load_checkpoint(path):
    """The state written by ``save_checkpoint``; ``CheckpointError`` naming the file if it is damaged."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}  # reads (and CRC-checks) every member
        document = json.loads(str(arrays.pop("__json__")))
    except Exception as error:  # zipfile.BadZipFile, EOFError, KeyError, ValueError, ...
        raise CheckpointError(f"load_checkpoint: {path} is not a readable minseg checkpoint (truncated or "
                              f"corrupt?): {type(error).__name__}: {error}") from error
    if document.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"load_checkpoint: {path} has format {document.get('format')!r}, "
                              f"expected {CHECKPOINT_FORMAT!r}")
    return _join_arrays(document["state"], arrays)
