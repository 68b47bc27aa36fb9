"""SIGTERM handled as Ctrl-C: a run that a scheduler or ``kill`` stops says what was saved, as Ctrl-C does.

Python turns SIGINT (Ctrl-C) into ``KeyboardInterrupt`` but lets SIGTERM end the process at once, between
any two instructions. ``terminate_as_interrupt()`` raises ``Terminated`` (a ``KeyboardInterrupt``) instead,
so every ``finally`` and ``except BaseException`` runs: a checkpoint write in progress removes its temporary
file (``minseg.atomic``), and ``minseg train`` prints what ``--out`` holds and how to continue. The exit
status then is 143 (128 + SIGTERM), and 130 (128 + SIGINT) after Ctrl-C, the shell's own numbers.
"""
import contextlib
import os
import signal
import sys
import threading

__all__ = ["Terminated", "terminate_as_interrupt", "exit_status"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; handled like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _deliver_again(previous_hook):
    """An unraisable-exception hook: an interrupt raised inside a weakref callback or ``__del__`` (which Python
    runs during garbage collection, anywhere) is printed and dropped there, and the run would go on as if
    no signal had come. Instead its signal is sent again, to land in the code that runs next."""
    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):  # after the finalizer: from a thread, a moment later
            signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
            threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
        else:
            previous_hook(unraisable)
    return hook


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM raises ``Terminated``, and an interrupt that lands in a finalizer is delivered
    again; outside it, both are as they were."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals go to the main thread only
        yield
        return
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _deliver_again(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


def exit_status(interrupt):
    """130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
