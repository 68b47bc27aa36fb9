"""The ``minseg train`` command: options from the flags or the checkpoint, ``--out`` locked, the run, and what an
interrupted run prints.

``cli`` parses the flags and reports errors; ``train`` here resolves them into the run's options (on
``--resume`` the checkpoint's, with only ``CHANGEABLE_ON_RESUME`` allowed to differ; every path made absolute
so that a run resumes from any folder), creates and locks ``--out`` (``lock``: one run per folder), builds the
``TrainingRun`` and, on Ctrl-C or SIGTERM, prints what ``--out`` holds and the command that continues the run
exactly as asked. Under ``mpiexec`` rank 0 alone creates, locks and writes ``--out``.
"""
import contextlib
import os
import shlex
import sys
from pathlib import Path

from .. import backend
from ..atomic import remove_stale_temporaries
from ..checkpoint import CheckpointError, load_checkpoint, load_checkpoint_description
from .interrupt import exit_status
from .lock import LOCK_NAME, lock_out
from .options import UsageError, check_train_options, jsonable
from .ranks import stop, threads_per_rank
from .run import TrainingRun
from .threads import limit_threads

__all__ = ["train", "CHANGEABLE_ON_RESUME", "check_device", "command_line"]

# Flags that may differ from the checkpoint being resumed: more (or fewer) epochs re-plan the one-cycle
# schedule over the new total from the step reached; the rest do not change what is computed.
CHANGEABLE_ON_RESUME = ("epochs", "device", "threads", "data", "out", "resume", "progress", "checkpoint_every")


def _absolute_paths(options):
    """The options with every path a user named made absolute, so that ``--resume`` works from any folder."""
    options = dict(options)
    for key in ("data", "colors", "weights", "out"):
        if options.get(key) is not None:
            options[key] = str(Path(options[key]).absolute())
    if options.get("classes") is not None and Path(options["classes"]).is_file():  # a file of names, not a list
        options["classes"] = str(Path(options["classes"]).absolute())
    return options


def _resolve(args, defaults, out):
    """The run's options: the checkpoint's on --resume (an explicit flag that contradicts one is an
    error, except CHANGEABLE_ON_RESUME), else the flags over the defaults. Also returns the checkpoint."""
    explicit = {key: value for key, value in vars(args).items() if value is not None and key in defaults}
    path = out / "checkpoint.npz"
    if not explicit.get("resume"):
        if path.exists():
            raise UsageError(f"--out {out} already holds a run (checkpoint.npz); pass --resume to continue it, "
                             "or choose another --out")
        return _absolute_paths({**defaults, **explicit, "out": out}), None
    state = load_checkpoint(path)
    run = state.get("run") if isinstance(state, dict) else None
    saved = run.get("args") if isinstance(run, dict) else None
    if not isinstance(saved, dict):
        raise CheckpointError(f"--resume: {path} was not written by minseg train (it holds no run description)")
    for key, value in explicit.items():
        if key not in CHANGEABLE_ON_RESUME and jsonable(value) != saved.get(key):
            raise UsageError(f"--{key.replace('_', '-')} {jsonable(value)} contradicts the checkpoint being resumed, "
                             f"which has {saved.get(key)}; drop the flag, or start a new run in another --out")
    changed = {key: explicit[key] for key in explicit if key in CHANGEABLE_ON_RESUME}
    return _absolute_paths({**defaults, **saved, **changed, "out": out}), state  # the --out that is locked


def train(args, defaults, prog, argv, comm):
    """``minseg train``: lock --out, train, write the results; Ctrl-C and SIGTERM say what was saved.

    Under mpiexec rank 0 alone creates, locks and writes --out; the other ranks print nothing."""
    out = Path(args.out if args.out is not None else defaults["out"]).absolute()
    if args.resume and not (out / "checkpoint.npz").is_file():
        raise UsageError(f"--resume: there is no checkpoint at {out / 'checkpoint.npz'}; start the run without "
                         "--resume")
    if comm.rank != 0:
        sys.stdout = open(os.devnull, "w")  # rank 0 alone prints the run's log
        return _train_locked(args, defaults, prog, argv, out, comm)
    created = [folder for folder in (out, *out.parents) if not folder.exists()]  # the deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file of that name, a read-only parent
        raise UsageError(f"--out {out}: cannot create the folder ({error.strerror}); choose another --out") from error
    with lock_out(out):
        try:
            return _train_locked(args, defaults, prog, argv, out, comm)
        finally:
            if created and not (out / "checkpoint.npz").exists():  # stopped before saving: leave no empty run
                (out / LOCK_NAME).unlink(missing_ok=True)
                for folder in created:
                    with contextlib.suppress(OSError):
                        folder.rmdir()


def _train_locked(args, defaults, prog, argv, out, comm):
    if comm.rank == 0:
        for name in ("checkpoint.npz", "metrics.json"):  # left by a run that was killed with -9 mid-write
            remove_stale_temporaries(out / name)
    stage = "training"
    try:
        options, state = _resolve(args, defaults, out)
        check_train_options(options, resuming=state is not None)
        check_device(options["device"])
        threads = threads_per_rank(comm, options["threads"])
        with limit_threads(threads):
            run = None
            try:
                run = TrainingRun(options, state, comm)
                run.threads = threads
                run.fit()
                stage = "results"
                run.report()
            except OSError as error:
                _raise_write_failure(error, run, options, _launcher(comm) + command_line(
                    prog, [*([] if args.train_only else ["train"]), "--out", out, "--resume"]))
    except KeyboardInterrupt as interrupt:
        return stop(comm, _interrupted(args, prog, argv, out, stage, comm), exit_status(interrupt))
    return 0


def _launcher(comm):
    """``mpiexec -n K `` in front of a command that continues a run of K ranks; nothing for one process."""
    return f"mpiexec -n {comm.size} " if comm.size > 1 else ""


def _raise_write_failure(error, run, options, resume_command):
    """A file-system error during a run (a full disk) as one UsageError: the file, the reason, what the
    checkpoint still holds and how to continue. The library's own messages (a missing data folder) pass on."""
    if error.errno is None:
        raise error
    name = error.filename or (run.checkpoint_path if run is not None else options["out"])
    epoch = _saved_epoch(run.checkpoint_path) if run is not None else 0
    kept = (f"{run.checkpoint_path} still holds the run after epoch {epoch} of {options['epochs']}; "
            f"once that is fixed, continue with: {resume_command}" if epoch else "no checkpoint was saved")
    raise UsageError(f"{name}: {error.strerror}; {kept}") from error


def _saved_epoch(path):
    """The epoch the checkpoint at ``path`` holds; 0 when there is none (or it cannot be read)."""
    try:
        return int(load_checkpoint_description(path)["epoch"]) if path.is_file() else 0
    except (CheckpointError, KeyError, TypeError, ValueError):
        return 0


def _interrupted(args, prog, argv, out, stage, comm):
    """What an interrupted ``minseg train`` prints: what --out holds, and the command that continues the run
    exactly as asked (the total --epochs, and the flags that may change on --resume that were given)."""
    path = out / "checkpoint.npz"
    try:
        saved = load_checkpoint_description(path) if path.is_file() else None
        epoch, epochs = int(saved["epoch"]), saved["run"]["args"]["epochs"]
    except (CheckpointError, KeyError, TypeError, ValueError):
        saved = None
    launcher = _launcher(comm)
    if saved is None:
        return (f"\ninterrupted before the first epoch ended, so nothing was saved; start again with:\n  "
                f"{launcher}{command_line(prog, argv)}")
    epochs = args.epochs if args.epochs is not None else epochs
    flags = [] if args.train_only else ["train"]
    flags += ["--out", out, "--resume", "--epochs", epochs]
    for key in ("device", "threads", "checkpoint_every") + (("data",) if args.resume else ()):
        value = getattr(args, key)
        if value is not None:
            flags += [f"--{key.replace('_', '-')}", Path(value).absolute() if key == "data" else value]
    flags += ["--no-progress"] if args.progress is False else []
    if stage == "results":
        return (f"\ninterrupted while writing the results: {path} holds the run after epoch {epoch} of {epochs}; "
                f"write the figures and metrics.json again with:\n  {launcher}{command_line(prog, flags)}")
    return (f"\ninterrupted: {path} holds the run after epoch {epoch} of {epochs}; continue with:\n  "
            f"{launcher}{command_line(prog, flags)}")


def check_device(device):
    """``--device cuda`` needs CuPy and a GPU: a UsageError otherwise."""
    if device == "cuda" and not backend.cupy_available():
        raise UsageError("--device cuda needs CuPy and an NVIDIA GPU, and this machine has none usable; "
                         "use --device cpu")


def command_line(prog, argv):
    """The shell command that runs ``prog`` with ``argv``, quoted so it can be pasted."""
    return " ".join([prog] + [shlex.quote(str(part)) for part in argv])
