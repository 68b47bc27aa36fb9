"""docs/figures.py --fast draws every figure of the course, each a valid PNG under the size cap, in a temporary folder.

The fast mode trains tiny models for a few steps on the real CamVid tiny and membrane data, so a figure that
no longer draws (a renamed function, a changed shape) fails here. The zoo figure is drawn from a small table
written in the zoo's format, because docs/zoo.md is written by a two-hour benchmark, not by the tests.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "figures.py"
DATA = ROOT.parent / "shared" / "data"
ZOO_TABLE = """# The zoo (a made-up table in the format benchmarks/zoo.py writes)

| model | year | idea | parameters | step (ms, batch 8) | inference (ms / image) | pixel accuracy | mean IoU \
| training time (s) |
|---|---|---|---:|---:|---:|---:|---:|---:|
| naive | — | no skips | 567,328 | 120 | 10 | 0.701 | 0.151 | 600 |
| unet | 2015 | skips by concatenation | 1,944,576 | 400 | 30 | 0.836 | 0.268 | 1,900 |
| enet | 2016 | real time | 365,156 | 200 | 20 | 0.650 | 0.120 (below naive) | 1,200 |

| another table | mean IoU | training time |
|---|---|---|
| not a model | 1 | 2 |
"""

def _figures_module():
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))  # figures.py imports model_trace.py from beside it, as a script does
    spec = importlib.util.spec_from_file_location("figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_fast_mode_writes_every_figure(tmp_path):
    if not (DATA / "camvid_tiny").is_dir() or not (DATA / "membrane").is_dir():
        pytest.skip(f"needs {DATA / 'camvid_tiny'} and {DATA / 'membrane'}")
    zoo = tmp_path / "zoo.md"
    zoo.write_text(ZOO_TABLE, encoding="utf-8")
    committed = {path.name: path.stat().st_mtime_ns for path in (ROOT / "docs" / "img").iterdir()}
    # No --out: the fast mode makes its own temporary folder (under TMPDIR, here inside tmp_path) and names it.
    done = subprocess.run([sys.executable, str(SCRIPT), "--fast", "--zoo", str(zoo)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    out = Path(done.stdout.strip().splitlines()[-1].removeprefix("the figures are in "))
    assert out.parent == tmp_path and out.name.startswith("minseg-figures-")
    assert {path.name: path.stat().st_mtime_ns for path in (ROOT / "docs" / "img").iterdir()} == committed
    figures = _figures_module()
    assert sorted(path.name for path in out.iterdir()) == sorted(figures.FIGURES)
    for name in figures.FIGURES:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert path.stat().st_size <= figures.MAX_BYTES, f"{name}: {path.stat().st_size} bytes"
        with Image.open(path) as image:
            image.verify()  # a truncated or corrupt PNG raises here
            assert min(image.size) >= 100, f"{name}: {image.size}"


def test_zoo_figure_waits_for_the_table(tmp_path):
    figures = _figures_module()
    figures.zoo_png(tmp_path / "absent.md", tmp_path / "zoo.png")
    assert not (tmp_path / "zoo.png").exists()


def test_zoo_points_read_the_table():
    x_heading, y_heading, points = _figures_module().zoo_points(ZOO_TABLE)
    assert (x_heading, y_heading) == ("training time (s)", "mean IoU")
    assert points == [("naive", 600.0, 0.151), ("unet", 1900.0, 0.268), ("enet", 1200.0, 0.12)]
    with pytest.raises(ValueError, match="no table with a 'training time' and a 'mean IoU' column"):
        _figures_module().zoo_points("| model | accuracy |\n|---|---|\n| a | 1 |\n")


def test_missing_data_is_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--fast", "--out", str(tmp_path), "--data",
                           str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --data {tmp_path / 'nowhere'}: no such folder; "
                                                "pass the dataset's folder"]


def test_the_tracer_finds_unets_skips_and_none_in_the_naive_model():
    _figures_module()  # puts docs/ on sys.path
    import numpy as np
    from model_trace import trace_blocks

    from minseg.models import Naive, PaperUNet
    x = np.zeros((1, 3, 32, 48), np.float32)
    calls = trace_blocks(PaperUNet(5, base=2, depth=2), x)
    names = [name for name, _, _, _ in calls]
    assert names == ["encoder.0", "pool", "encoder.1", "pool", "bottleneck", "upsample.0", "decoder.0",
                     "upsample.1", "decoder.1", "head"]
    skips = {(names[source], names[index]) for index, (_, _, _, sources) in enumerate(calls)
             for source in sources if source not in (-1, index - 1)}
    assert skips == {("encoder.1", "decoder.0"), ("encoder.0", "decoder.1")}
    assert calls[0][1] == "(conv3×3 BN ReLU)×2" and calls[4][2] == (1, 8, 8, 12) and calls[-1][2] == (1, 5, 32, 48)
    naive = trace_blocks(Naive(5, widths=(2, 4)), x)
    assert [sources for _, _, _, sources in naive] == [{-1}, {0}, {1}, {2}, {3}]
    assert naive[0][1] == "conv3×3/2 BN ReLU"


def test_tracing_leaves_the_model_as_it_was():
    _figures_module()
    import numpy as np
    from model_trace import trace_blocks

    from minseg.models import PaperUNet
    model = PaperUNet(3, base=2, depth=2)
    before = {name: value.copy() for name, value in model.state_dict().items()}
    trace_blocks(model, np.ones((1, 3, 16, 16), np.float32))
    assert model.training and all("forward" not in module.__dict__ for module in model.modules())
    assert all(np.array_equal(before[name], value) for name, value in model.state_dict().items())
