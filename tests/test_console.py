"""Ctrl-C while the ``minseg`` command starts: one line, exit 130, no traceback.

Each test runs a program in a fresh interpreter whose ``sitecustomize`` (found first on ``PYTHONPATH``) installs
an import hook that raises ``KeyboardInterrupt`` when a chosen module is imported: the moment a Ctrl-C lands
while NumPy or the command line is still being imported. The console script is run as pip writes it, from the
entry point in setup.cfg.
"""
import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minseg.app.console import INTERRUPTED

REPO = Path(__file__).resolve().parents[1]
SITECUSTOMIZE = '''
import sys


class InterruptOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
        return None


sys.meta_path.insert(0, InterruptOnImport())
'''


def console_script():
    """The script pip installs as ``minseg``: the entry point's function, called with the command line."""
    entry = configparser.ConfigParser()
    entry.read(REPO / "setup.cfg")
    scripts = dict(line.split(" = ") for line in entry["options.entry_points"]["console_scripts"].strip().splitlines())
    module, function = scripts["minseg"].split(":")
    return f"import sys; from {module} import {function}; sys.exit({function}())"


def run_interrupted_at(module, tmp_path, *command):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE.format(module=module))
    path = os.pathsep.join([str(hooks), str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env=dict(os.environ, PYTHONPATH=path))


@pytest.mark.parametrize("module", ["numpy", "minseg.app.cli"])
def test_ctrl_c_while_the_console_script_imports_is_one_line_and_exit_130(tmp_path, module):
    result = run_interrupted_at(module, tmp_path, "-c", console_script(), "train", "--epochs", "1")
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines() == [INTERRUPTED] and result.stdout == ""
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("example", ["camvid_tiny.py", "membrane.py"])
def test_ctrl_c_while_an_example_imports_is_one_line_and_exit_130(tmp_path, example):
    result = run_interrupted_at("numpy", tmp_path, str(REPO / "examples" / example), "--data", str(tmp_path))
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines() == [INTERRUPTED] and result.stdout == ""


def test_the_console_script_and_the_hook_run_normally_otherwise(tmp_path):
    result = run_interrupted_at("no.such.module", tmp_path, "-c", console_script(), "train", "--data",
                                str(tmp_path / "no"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"error: --data {tmp_path / 'no'}: no such folder; expected a dataset folder"]


def test_importing_the_console_script_imports_neither_numpy_nor_the_library(tmp_path):
    code = "import sys, minseg.app.console; print(sorted(m for m in sys.modules if m.split('.')[0] in "\
           "('numpy', 'minseg')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                                       "")])))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['minseg', 'minseg.app', 'minseg.app.console']"


def test_the_package_imports_each_name_on_first_use():
    import minseg
    import minseg.functional as F
    from minseg import Tensor, gradcheck, nn
    from minseg.gradcheck import gradcheck as the_function

    assert minseg.Tensor is Tensor and minseg.nn is nn and minseg.functional is F
    assert minseg.gradcheck is gradcheck is the_function  # the function, though minseg.gradcheck is also a module
    assert set(minseg.__all__) <= set(dir(minseg)) and {"viz", "train", "app"} <= set(dir(minseg))
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        minseg.no_such_name
