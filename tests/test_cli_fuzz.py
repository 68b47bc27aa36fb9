"""Every option of every minseg command, each given each kind of bad value: one ``error:`` line naming it, exit 2.

The options are read from the argparse parsers (``cli.build_parser``), so an option added later is fed the
same values without a change here. Each bad value is one of: zero, negative, NaN, infinite, huge, not a
number, empty; and for options that name files: a missing path, a folder where a file belongs, a file where
a folder belongs, a file that is not what the option reads. A value an option accepts (``--seed 0``) is
left out by ``ACCEPTED``; every other value must stop the command before it reads data or trains (a case
that trains instead would take seconds and fail the assertion). Most cases run in this process through
``cli.main`` and the examples' ``main``; a few run the console script and the examples as programs.
"""
import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import write_dataset

from minseg.app import cli

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny_naive_checkpoint.npz"
NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e30", str(10**12), "abc", "", "1.5x"]
# Values an option accepts: left out of its cases.
ACCEPTED = {"--seed": {"0"}, "--weight-decay": {"0"}, "--ignore": {"0"}, "--overlap": {"0"}, "--score-threshold": {"0"},
            "--mask-suffix": set(NUMBERS)}  # any text without a path separator is a suffix
# Options whose bad values are not numbers: what each must refuse.
OTHER_BAD = {"--mask-suffix": ["a/b", "a\\b"]}
# Options whose value names a file (f) or a folder (d); "out" folders may be new, so only wrong kinds are bad.
PATHS = {"--data": "d", "--colors": "f", "--classes": "f", "--weights": "f", "--checkpoint": "f", "--out": "out",
         "images": "images"}


def _value_options(parser):
    """(flag, action) for each option of ``parser`` that takes a value, positional arguments included."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.nargs == 0:
            continue
        yield (max(action.option_strings, key=len) if action.option_strings else action.dest), action


def _commands():
    """{command: its parser}: ``minseg train``, ``evaluate``, ``predict``."""
    parser, _ = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def _bad_values(flag, action, where):
    """The bad values for one option: paths for file options, everything else for the rest."""
    kind = PATHS.get(flag)
    paths = {"missing": str(where / "missing" / "nothing.txt"), "folder": str(where / "folder"),
             "file": str(where / "file.txt"), "garbage": str(where / "garbage.png"), "empty": ""}
    if kind == "d":
        return [paths["missing"], paths["file"], paths["empty"]]
    if kind == "f":
        return [paths["missing"], paths["folder"], paths["garbage"], paths["empty"]]
    if kind == "out":
        return [paths["file"], str(where / "file.txt" / "inside"), paths["empty"]]
    if kind == "images":
        return [paths["missing"], paths["garbage"], str(where / "folder"), paths["empty"]]
    values = [value for value in NUMBERS if value not in ACCEPTED.get(flag, set())] + OTHER_BAD.get(flag, [])
    return [value for value in values if action.choices is None or value not in action.choices]


def _cases():
    """(command, flag, bad value) for every option of every command; paths as names in the fuzz folder."""
    where = Path("{fuzz}")
    for command, parser in _commands().items():
        for flag, action in _value_options(parser):
            for value in _bad_values(flag, action, where):
                yield pytest.param(command, flag, value, id=f"{command} {flag} {value.replace('{fuzz}', '')!r}")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """A tiny dataset, one image to predict, and the files the path values name."""
    root = tmp_path_factory.mktemp("fuzz")
    write_dataset(root / "data", n=6, size=(8, 8))  # --valid-every 5 leaves 1 to validate
    (root / "folder").mkdir()
    (root / "file.txt").write_text("a file\n")
    (root / "garbage.png").write_bytes(b"\x00\xff not what any option reads \x80\x81")
    (root / "photos").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "photos" / "photo.png")
    return root


def _base(command, root):
    """A command line that works, so that the bad value is the only mistake."""
    if command == "train":
        return ["train", "--data", root / "data", "--out", root / "run", "--epochs", "1", "--base", "2",
                "--batch-size", "2", "--threads", "1", "--no-progress"]
    if command == "evaluate":
        return ["evaluate", "--checkpoint", FIXTURE, "--data", root / "data", "--threads", "1"]
    return ["predict", "--checkpoint", FIXTURE, root / "photos", "--out", root / "predicted", "--threads", "1",
            "--no-progress"]


def _argv(command, flag, value, root):
    argv = [str(part) for part in _base(command, root)]
    value = value.replace("{fuzz}", str(root))
    if flag == "images":  # the positional: in place of the good folder
        argv[argv.index(str(root / "photos"))] = value
    else:
        argv.append(f"{flag}={value}")  # "=" keeps a value such as -1 from reading as a flag
    return argv


def _run(capsys, main, argv):
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.err


def _assert_one_error_line(status, err, flag, value, root):
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    named = value.replace("{fuzz}", str(root)) if flag == "images" else flag
    assert named in lines[0], f"the line does not name {named!r}: {lines[0]}"


@pytest.mark.parametrize("command, flag, value", list(_cases()))
def test_every_bad_option_value_is_one_error_line_naming_it(fuzz, capsys, command, flag, value):
    status, err = _run(capsys, cli.main, _argv(command, flag, value, fuzz))
    _assert_one_error_line(status, err, flag, value, fuzz)
    assert not (fuzz / "run").exists() and not (fuzz / "predicted").exists(), "the command went on to write"


def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["camvid_tiny", "membrane"])
def test_the_examples_give_every_train_option_the_same_one_line(fuzz, capsys, name):
    """The examples are ``minseg train`` with other defaults: the same values fail the same way."""
    main = _example(name).main
    train = _commands()["train"]
    for flag, action in _value_options(train):
        for value in _bad_values(flag, action, Path("{fuzz}"))[:4]:
            argv = _argv("train", flag, value, fuzz)[1:] + ["--layout=auto"] * (name == "membrane")
            status, err = _run(capsys, main, argv)
            _assert_one_error_line(status, err, flag, value, fuzz)


def test_the_option_list_is_complete():
    """Every option the fuzz test feeds is one the parsers have, and the count says none was skipped."""
    commands = _commands()
    flags = {command: [flag for flag, _ in _value_options(parser)] for command, parser in commands.items()}
    assert {"--lr", "--scale", "--weights", "--ignore", "--resize", "--out"} <= set(flags["train"])
    assert {"--checkpoint", "--threads", "--device", "--data"} <= set(flags["evaluate"])
    assert {"--checkpoint", "images", "--out", "--score-threshold"} <= set(flags["predict"])
    for command, parser in commands.items():
        for flag, action in _value_options(parser):
            assert _bad_values(flag, action, Path("x")), f"{command} {flag} gets no bad value"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode, so chmod 000 stops nothing")
def test_an_unreadable_file_is_one_error_line(fuzz, capsys, tmp_path):
    colors = tmp_path / "colors.txt"
    colors.write_text("0 0 0 a\n255 255 255 b\n")
    colors.chmod(0)
    status, err = _run(capsys, cli.main, [str(part) for part in _base("train", fuzz)] + [
        "--layout", "folders", "--colors", str(colors)])
    _assert_one_error_line(status, err, "--colors", "", fuzz)
    assert "cannot read it" in err


@pytest.mark.parametrize("program, arguments, flag", [
    ([sys.executable, "-m", "minseg.app.cli", "train"], ["--lr", "nan"], "--lr"),
    ([sys.executable, "-m", "minseg.app.cli", "predict", "--checkpoint", str(FIXTURE), "--out", "{tmp}/p"],
     ["{tmp}/missing.png"], "missing.png"),
    ([sys.executable, str(REPO / "examples" / "camvid_tiny.py")], ["--base", "1e30"], "--base"),
    ([sys.executable, str(REPO / "examples" / "membrane.py")], ["--scale", "abc"], "--scale"),
])
def test_the_programs_exit_2_with_one_line_and_no_traceback(tmp_path, program, arguments, flag):
    command = [part.replace("{tmp}", str(tmp_path)) for part in program + arguments]
    environment = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], result.stderr
