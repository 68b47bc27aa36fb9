"""What every test runs inside: its own empty working folder, and a temporary folder that must stay clean.

Working folder. Each test starts in its own empty ``tmp_path``, so a default such as ``--out runs/camvid_tiny``
writes there and never meets a run the README's example left in the repository (or one of another test).

Temporary folder. For the whole session ``tempfile`` (and, through ``TMPDIR``, every subprocess) writes into
``<pytest's basetemp>/tmp``, which pytest removes with the rest of its folders (``tmp_path_retention_policy =
failed`` in setup.cfg keeps only the folders of failed tests). A test after which that folder holds a new
entry fails, naming it: a test leaves nothing behind in the system's temporary folder.
"""
import os
import tempfile

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_temporary_folder(tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "tmp"
    folder.mkdir()
    saved_tempdir, saved_environment = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(folder), str(folder)
    yield folder
    tempfile.tempdir = saved_tempdir
    if saved_environment is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_environment


@pytest.fixture(autouse=True)
def _clean_temporary_folder_and_own_working_folder(_session_temporary_folder, tmp_path, monkeypatch):
    before = set(os.listdir(_session_temporary_folder))
    monkeypatch.chdir(tmp_path)
    yield
    left = sorted(set(os.listdir(_session_temporary_folder)) - before)
    if left:
        pytest.fail(f"the test left {', '.join(left)} in the temporary folder {_session_temporary_folder}; "
                    "remove what it creates there (tempfile.TemporaryDirectory, or tmp_path)", pytrace=False)
