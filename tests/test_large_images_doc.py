"""docs/large_images.py --fast trains a tiny model on the membrane slices, prints its table, draws the seams figure."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "large_images.py"
MEMBRANE = ROOT.parent / "shared" / "data" / "membrane"


@pytest.mark.slow
def test_fast_mode_prints_the_table_and_draws_the_figure(tmp_path):
    if not MEMBRANE.is_dir():
        pytest.skip(f"needs {MEMBRANE}")
    done = subprocess.run([sys.executable, str(SCRIPT), "--fast", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| whole image |")]
    assert rows and rows[-1].endswith("| 0.00% |")  # the whole image differs from itself nowhere
    assert "| tiles 256, no overlap |" in done.stdout
    path = tmp_path / "tiles_seams.png"
    assert path.stat().st_size <= 200 * 1024
    with Image.open(path) as image:
        image.verify()


def test_missing_data_is_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "nowhere")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: --data {tmp_path / 'nowhere'}: no such folder; "
                                   "pass the membrane slices' folder")
