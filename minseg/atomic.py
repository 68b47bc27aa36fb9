"""Writing a file so that a crash never leaves half of it: a temporary file, fsync, then an atomic rename.

``atomic_write(path)`` opens ``<name>.<pid>-<random>.tmp`` in the same folder, and when the block ends
without an exception flushes it, fsyncs it, gives it the mode an ordinary ``open`` would (0o666 less the
umask; ``tempfile.mkstemp`` alone would leave 0o600), renames it over ``path`` with ``os.replace`` (atomic on
POSIX and Windows) and fsyncs the folder. Any exception, Ctrl-C and SIGTERM included, removes the temporary
file. Only ``kill -9`` (or a power cut) can leave one behind; the writer's process id in its name lets
``remove_stale_temporaries`` tell such a leftover from a write still in progress.
"""
import contextlib
import os
import re
import tempfile

__all__ = ["atomic_write", "file_mode", "remove_stale_temporaries"]


def file_mode():
    """The mode ``open`` gives a new file: 0o666 less the process's umask."""
    try:
        with open("/proc/self/status") as status:  # Linux: reads the umask without changing it
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)  # elsewhere: the only way to read it is to set it and put it back
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); Windows has no directory handles to flush."""
    if hasattr(os, "O_DIRECTORY"):
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_write(path):
    """``with atomic_write(path) as file: file.write(...)``: ``path`` holds either its old content or all
    of the new, never a part; the new file follows the umask."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.{os.getpid()}-", suffix=".tmp",
                                             dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), file_mode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_folder(folder)


def _alive(pid):
    if pid == os.getpid():
        return False  # this process writes one file at a time, and is not writing now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's process
        return True
    return True


def remove_stale_temporaries(path):
    """Remove the temporary files ``atomic_write(path)`` left behind in a process that no longer runs
    (``kill -9``); a write in progress in another live process is left alone. Returns the removed names."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(re.escape(name) + r"\.(?:(\d+)-)?[\w]+\.tmp")
    removed = []
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        match = pattern.fullmatch(entry)
        if match and not (match.group(1) and _alive(int(match.group(1)))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, entry))
                removed.append(entry)
    return removed
