"""One training run per ``--out`` at a time: an exclusive ``flock`` on ``--out/train.lock``.

The operating system releases the lock when the process ends in any way (``kill -9`` included), so a
lock is never left stale; the file itself stays and holds the process id of the last run that took it,
for the message a second run prints. POSIX only (``fcntl``); where it is missing, runs are not locked.
"""
import os
from pathlib import Path

from .options import UsageError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_NAME", "lock_out"]

LOCK_NAME = "train.lock"


class _Lock:
    def __init__(self, file):
        self.file = file

    def release(self):
        if self.file is not None:
            self.file.close()  # closing the descriptor releases the flock
            self.file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_out(out):
    """Lock the folder ``out`` (which must exist) for this process; UsageError naming ``--out`` if another
    run holds it. Use as ``with lock_out(out): ...``."""
    path = Path(out) / LOCK_NAME
    try:
        file = open(path, "a+")
    except OSError as error:
        raise UsageError(f"--out {out}: cannot create the lock file {LOCK_NAME} there ({error.strerror}); "
                         "choose a folder you may write to") from error
    if fcntl is None:
        return _Lock(file)
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        file.seek(0)
        holder = file.read().strip()
        file.close()
        raise UsageError(f"--out {out} is in use by another minseg train (process {holder or '?'} holds "
                         f"{path}); wait for it to end, or choose another --out") from None
    file.seek(0)
    file.truncate()
    file.write(f"{os.getpid()}\n")
    file.flush()
    return _Lock(file)
