"""benchmarks/zoo.py in its smoke mode (1 epoch on 16+8 CamVid tiny images): a continued zoo keeps each row's run.

docs/zoo.md may combine rows of several runs (a model trained again with ``--redo`` after a change); the table must
then say which run, commit and command each row comes from, not pass the newest command off as the whole table's.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "zoo.py"
CAMVID = ROOT.parent / "shared" / "data" / "camvid_tiny"
pytestmark = pytest.mark.slow  # trains on the real CamVid tiny data (three runs of seconds each)


def zoo(tmp_path, *arguments):
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "--doc",
                           str(tmp_path / "zoo.md"), *arguments], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "zoo_results.json").read_text()), (tmp_path / "zoo.md").read_text()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    if not (CAMVID / "codes.txt").is_file():
        pytest.skip(f"needs {CAMVID}")
    folder = tmp_path_factory.mktemp("zoo")
    return folder, *zoo(folder, "--models", "naive")


def test_one_run_names_its_command(first_run):
    _, results, doc = first_run
    command = results["results"]["naive"]["run"]["command"]
    assert command.startswith("python benchmarks/zoo.py --smoke") and command.endswith("--models naive")
    assert "Command: `python benchmarks/zoo.py --smoke" in doc and "The rows come from" not in doc


def test_a_continued_run_keeps_each_rows_run_and_redo_replaces_only_its_models(first_run):
    folder, results, _ = first_run
    naive_before = results["results"]["naive"]

    continued, doc = zoo(folder, "--models", "naive,enet")  # naive is skipped, enet is new
    assert continued["results"]["naive"] == naive_before
    assert "--models naive,enet" in continued["results"]["enet"]["run"]["command"]
    assert "The rows come from 2 runs" in doc
    assert [line.endswith(": naive.") for line in doc.splitlines() if line.startswith("- `")] == [True, False]

    redone, doc = zoo(folder, "--models", "naive", "--redo")
    assert redone["results"]["enet"] == continued["results"]["enet"]
    assert redone["results"]["naive"]["run"]["command"].endswith("--models naive --redo")
    assert "The rows come from 2 runs" in doc
