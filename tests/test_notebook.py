"""examples/camvid_tiny.ipynb runs top to bottom at small settings, through nbclient (the maintained executor
that nbconvert and papermill use), and is committed without outputs.

``MINSEG_NOTEBOOK_SMALL=1`` makes the notebook train tiny models for one epoch on a few images. The executor
comes with ``pip install -e ".[notebook]"``; without it the execution test skips, saying so.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "camvid_tiny.ipynb"
CAMVID = ROOT.parent / "shared" / "data" / "camvid_tiny"


def test_notebook_is_committed_without_outputs():
    document = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in document["cells"] if cell["cell_type"] == "code"]
    assert code
    for index, cell in enumerate(code):
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"code cell {index} holds outputs"


def test_notebook_holds_no_library_code():
    document = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    source = "\n".join("".join(cell["source"]) for cell in document["cells"] if cell["cell_type"] == "code")
    assert "import minseg" in source
    # Models, layers, losses and autograd live in minseg: the notebook defines no class and no forward/backward.
    definitions = re.findall(r"^\s*(class \w+|def (?:forward|backward)\b)", source, flags=re.MULTILINE)
    assert not definitions, f"the notebook defines {definitions}; import them from minseg"


@pytest.mark.slow
def test_notebook_runs_at_small_settings(monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason='needs the notebook extra: pip install -e ".[notebook]"')
    nbclient = pytest.importorskip("nbclient", reason='needs the notebook extra: pip install -e ".[notebook]"')
    pytest.importorskip("ipykernel", reason='needs the notebook extra: pip install -e ".[notebook]"')
    if not CAMVID.is_dir():
        pytest.skip(f"needs CamVid tiny in {CAMVID}")
    monkeypatch.setenv("MINSEG_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MINSEG_CAMVID", str(CAMVID))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline, as a reader sees it
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 6, f"expected the notebook's figures, got {len(images)} images"
    text = "".join(output.get("text", "") for output in outputs)
    assert "small settings: 1 epochs" in text and "mean IoU" in text
