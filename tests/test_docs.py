"""Every code block in docs/*.md runs as written: each ```python block on its own, with its own imports.

Sybil parses the Markdown (its PythonCodeBlockParser finds the ```python fences); each block
becomes one test, named page:line, and runs in a fresh namespace, so a block that uses a name
from the block before fails here as it would for a reader who copies it alone. Shell commands
belong in ```bash blocks and printed output (an error message, a table a script prints) in
```text blocks, neither of which is run; a fence with any other language, or none, fails
``test_every_code_block_is_tagged``, so no code escapes by its tag. A block whose first line is
the comment ``# needs a GPU`` runs where CuPy sees a GPU and is skipped elsewhere, as the
``gpu``-marked tests are.
"""
import pathlib
import re
import tempfile

import pytest
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser

from minseg import backend

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
RUN, NOT_RUN = "python", ("bash", "text")
_FENCE = re.compile(r"^(\s*)```(\S*)")
GPU_MARK = "# needs a GPU"


def _python_blocks():
    sybil = Sybil(parsers=[PythonCodeBlockParser()])
    for page in PAGES:
        for example in sybil.parse(page):
            yield pytest.param(example, id=f"{page.name}:{example.line}")


def _opening_fences(page):
    """(line number, language) of each opening ``` fence of ``page``."""
    opened, fences = False, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            if not opened:
                fences.append((number, match.group(2)))
            opened = not opened
    return fences


def test_the_docs_have_pages_and_python_blocks():
    assert PAGES and list(_python_blocks())


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_code_block_is_tagged(page):
    others = [(number, language) for number, language in _opening_fences(page) if language not in (RUN, *NOT_RUN)]
    assert not others, (f"{page.name}: code blocks at lines {others} are neither ```python (run by this test) nor "
                        f"```bash (shell commands) or ```text (output), which are not run; tag each one")


@pytest.mark.parametrize("example", list(_python_blocks()))
def test_docs_code_block_runs_on_its_own(example, tmp_path, monkeypatch):
    if str(example.parsed).lstrip().startswith(GPU_MARK) and not backend.cupy_available():
        pytest.skip(f"{example.path}:{example.line} needs a GPU (CuPy found none)")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # a block that draws must not open a window
    monkeypatch.chdir(tmp_path)  # a block that writes files leaves them out of the repository
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # and its temporary folders go with tmp_path
    example.namespace.clear()  # no names from the block before
    example.evaluate()


ZOO_ROWS_BEGIN, ZOO_ROWS_END = "<!-- zoo rows: copied from docs/zoo.md -->", "<!-- end of zoo rows -->"


def test_course_page_3b_quotes_the_zoo_rows_as_the_zoo_wrote_them():
    """Page 3b shows each model's row of docs/zoo.md; a quoted row that is not in zoo.md has drifted from the run."""
    page = (DOCS / "course_3b_architectures.md").read_text(encoding="utf-8")
    assert page.count(ZOO_ROWS_BEGIN) == 1 and page.count(ZOO_ROWS_END) == 1, "the zoo rows' markers are missing"
    quoted = page.split(ZOO_ROWS_BEGIN)[1].split(ZOO_ROWS_END)[0].strip().splitlines()[2:]  # after the header
    written = set((DOCS / "zoo.md").read_text(encoding="utf-8").splitlines())
    assert len(quoted) >= 10
    assert [row for row in quoted if row not in written] == []
