"""SIGTERM handled as Ctrl-C: a run that a scheduler or ``kill`` stops says what was saved, as Ctrl-C does.

Python turns SIGINT (Ctrl-C) into ``KeyboardInterrupt`` but lets SIGTERM end the process at once, between
any two instructions. ``terminate_as_interrupt()`` raises ``Terminated`` (a ``KeyboardInterrupt``) instead,
so every ``finally`` and ``except BaseException`` runs: a checkpoint write in progress removes its temporary
file (``minseg.atomic``), and ``minseg train`` prints what ``--out`` holds and how to continue. The exit
status then is 143 (128 + SIGTERM), and 130 (128 + SIGINT) after Ctrl-C, the shell's own numbers.
"""
import contextlib
import signal

__all__ = ["Terminated", "terminate_as_interrupt", "exit_status"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; handled like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM raises ``Terminated``; outside it, SIGTERM does what it did before."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals go to the main thread only
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(interrupt):
    """130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
