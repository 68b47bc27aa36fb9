"""benchmarks/zoo.py in its smoke mode (1 epoch on 16+8 CamVid tiny images): a continued zoo keeps each row's run.

docs/zoo.md may combine rows of several runs (a model trained again with ``--redo`` after a change); the table must
then say which run, commit and command each row comes from, not pass the newest command off as the whole table's.
The results behind the committed table are not committed: ``--import-doc`` reads them back from it, so exactly.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "zoo.py"
CAMVID = ROOT.parent / "shared" / "data" / "camvid_tiny"
DOC = ROOT / "docs" / "zoo.md"


def zoo_script(*arguments):
    done = subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


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


@pytest.mark.slow  # trains on the real CamVid tiny data (three runs of seconds each)
def test_one_run_names_its_command(first_run):
    _, results, doc = first_run
    command = results["results"]["naive"]["run"]["command"]
    assert command.startswith("python benchmarks/zoo.py --smoke") and command.endswith("--models naive")
    assert "Command: `python benchmarks/zoo.py --smoke" in doc and "The rows come from" not in doc


@pytest.mark.slow
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


def test_the_committed_table_imports_and_rewrites_byte_for_byte(tmp_path):
    doc = tmp_path / "zoo.md"
    doc.write_bytes(DOC.read_bytes())
    zoo_script("--import-doc", "--out", str(tmp_path), "--doc", str(doc))
    doc.write_text("")
    zoo_script("--doc-only", "--out", str(tmp_path), "--doc", str(doc))
    assert doc.read_bytes() == DOC.read_bytes()


def test_imported_rows_keep_their_machine_and_saved_rows_win(tmp_path):
    doc = tmp_path / "zoo.md"
    doc.write_bytes(DOC.read_bytes())
    results = tmp_path / "zoo_results.json"
    saved = {"epochs": 25, "smoke": False, "date": "2030-01-01 00:00 UTC", "machine": "another machine",
             "commit": "abc1234", "command": "python benchmarks/zoo.py --models naive", "train_images": 80,
             "valid_images": 20, "results": {"naive": {"parameters": 1, "epochs": 25, "final_train_loss": 1.0,
                                                       "pixel_accuracy": 0.5, "mean_iou": 0.999, "training_seconds": 1,
                                                       "step_ms": 1, "step_batch": 8, "inference_ms": 1}}}
    results.write_text(json.dumps(saved))
    zoo_script("--import-doc", "--out", str(tmp_path), "--doc", str(doc))
    zoo_script("--doc-only", "--out", str(tmp_path), "--doc", str(doc))
    rewritten = doc.read_text(encoding="utf-8")
    assert json.loads(results.read_text())["results"]["naive"]["mean_iou"] == 0.999
    assert rewritten.startswith("# The zoo: every minseg model, one recipe\n")  # no longer one machine
    assert "Machine: another machine." in rewritten and "on this machine unless named:" in rewritten
    assert "at commit 53eb13f on Intel" in rewritten and "`python benchmarks/zoo.py --models naive`" in rewritten
    assert rewritten.endswith(DOC.read_text(encoding="utf-8").split("## Below the naive model")[1].split("\n\n", 2)[2])
