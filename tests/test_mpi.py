"""Data-parallel training on real MPI ranks: ``mpiexec -n 2`` on this machine, launched in a subprocess.

Skipped where mpi4py or mpiexec is missing (``pip install -e ".[mpi]"`` brings both). The runs themselves are
tests/mpi_driver.py; tests/test_data_parallel.py checks the same equivalence on thread ranks.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli import write_dataset
from test_data_parallel import ColourDataset, paper_unet, resnet_fcn, train_and_evaluate

from minseg.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "mpi_driver.py"


def _mpiexec():
    beside_python = Path(sys.executable).parent / "mpiexec"  # where pip's mpich puts it
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401
    MPIEXEC = _mpiexec()
except ImportError:
    MPIEXEC = None
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason='needs mpi4py and mpiexec: pip install -e ".[mpi]"')
TINY = ["--base", "2", "--batch-size", "4", "--no-progress", "--threads", "1"]


def environment(**extra):
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def mpiexec(*arguments, ranks=2, timeout=240, **extra):
    """(exit status, stdout, stderr) of ``mpiexec -n ranks python tests/mpi_driver.py ARGUMENTS``."""
    result = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, str(DRIVER), *map(str, arguments)],
                            capture_output=True, text=True, timeout=timeout, env=environment(**extra))
    return result.returncode, result.stdout, result.stderr


def start(tmp_path, *arguments):
    """A long ``mpiexec -n 2`` training in the background, and a function that waits for both ranks' pids."""
    pids = tmp_path / "pids"
    pids.mkdir()
    process = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, str(DRIVER), "cli", *map(str, arguments)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment(MINSEG_PID_DIR=str(pids)), start_new_session=True)

    def rank_pids():
        deadline = time.monotonic() + 60
        while not all((pids / f"rank{r}").exists() for r in range(2)) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # into the training
        return [int((pids / f"rank{r}").read_text()) for r in range(2)]
    return process, rank_pids


def finish(process, seconds):
    """(status, stdout, stderr, seconds taken) of a process expected to end within ``seconds``."""
    begun = time.monotonic()
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"mpiexec still ran {seconds} s later: the ranks hang")
    return process.returncode, out, err, time.monotonic() - begun


def test_two_mpi_ranks_reach_one_process_weights_and_metrics(tmp_path):
    status, _, err = mpiexec("equivalence", tmp_path / "ranks.npz")
    assert status == 0, err
    saved = np.load(tmp_path / "ranks.npz")
    # float64; ResNet-18's 11 M weights after two SGD steps sum more terms in other orders than the small UNet
    for name, make_model, size, batch, tolerance in (("unet", paper_unet, (8, 8), 4, 1e-11),
                                                     ("fcn", resnet_fcn, (32, 32), 3, 1e-10)):
        data = ColourDataset(11 if name == "unet" else 5, size, seed=1), ColourDataset(7, size, seed=2)
        (weights, metrics, history), = train_and_evaluate(make_model, None, data, batch_size=batch)
        for key, value in weights.items():
            np.testing.assert_allclose(saved[f"{name}/{key}"], value, rtol=tolerance, atol=tolerance, err_msg=key)
        np.testing.assert_array_equal(saved[f"{name}/confusion_matrix"], metrics["confusion_matrix"])
        np.testing.assert_allclose(saved[f"{name}/train_loss"], history[-1]["train_loss"], rtol=1e-10)


def test_minseg_train_on_two_ranks_then_resume_on_one(tmp_path):
    data, out = write_dataset(tmp_path / "data"), tmp_path / "run"
    status, printed, err = mpiexec("cli", "train", "--data", data, "--out", out, "--epochs", "1", *TINY)
    assert status == 0, err
    assert "2 ranks × 1 BLAS thread each, synchronized batch norm" in printed
    assert printed.count("validation after 1 epoch") == 1  # rank 0 alone prints
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
    status, printed, err = mpiexec("cli", "train", "--out", out, "--resume", "--epochs", "2", "--no-progress",
                                   "--threads", "1", ranks=1)
    assert status == 0, err
    assert "after epoch 1 of 2" in printed and load_checkpoint(out / "checkpoint.npz")["epoch"] == 2


def test_a_mistake_is_one_error_line_from_rank_0_and_status_2(tmp_path):
    status, _, err = mpiexec("cli", "train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run", *TINY)
    assert status == 2
    expected = f"error: --data {tmp_path}/nowhere: no such folder; expected a dataset folder"
    assert [line for line in err.splitlines() if line.strip()] == [expected]


def test_a_bug_on_one_rank_ends_every_rank_with_status_1(tmp_path):
    data = write_dataset(tmp_path / "data")
    begun = time.monotonic()
    status, _, err = mpiexec("fail-on-rank-1", "train", "--data", data, "--out", tmp_path / "run", "--epochs", "3",
                             *TINY, timeout=60)
    assert status == 1 and "RuntimeError: a bug on rank 1" in err
    assert "error: internal error (RuntimeError: a bug on rank 1)" in err and "[rank 1 of 2; ending the job]" in err
    assert time.monotonic() - begun < 50


def test_a_killed_rank_takes_the_job_down_within_seconds(tmp_path):
    data = write_dataset(tmp_path / "data")
    process, rank_pids = start(tmp_path, "train", "--data", data, "--out", tmp_path / "run", "--epochs", "100",
                               "--repeat", "20", *TINY)
    os.kill(rank_pids()[1], signal.SIGKILL)
    status, _, _, seconds = finish(process, 30)
    assert status != 0 and seconds < 15


def test_ctrl_c_ends_every_rank_with_the_command_that_continues(tmp_path):
    data = write_dataset(tmp_path / "data")
    process, rank_pids = start(tmp_path, "train", "--data", data, "--out", tmp_path / "run", "--epochs", "100",
                               "--repeat", "20", *TINY)
    rank_pids()
    os.kill(process.pid, signal.SIGINT)  # mpiexec hands Ctrl-C to every rank
    status, _, err, seconds = finish(process, 30)
    assert status == 130 and "mpiexec -n 2 minseg train --" in err and seconds < 15, err
    assert err.count("interrupted") == 1


def test_no_sync_bn_normalizes_each_share_by_itself(tmp_path):
    data, out = write_dataset(tmp_path / "data"), tmp_path / "run"
    status, printed, err = mpiexec("cli", "train", "--data", data, "--out", out, "--epochs", "1", "--no-sync-bn",
                                   *TINY)
    assert status == 0, err
    assert "2 ranks × 1 BLAS thread each, per-rank batch norm" in printed
    assert load_checkpoint(out / "checkpoint.npz")["run"]["args"]["sync_bn"] is False
