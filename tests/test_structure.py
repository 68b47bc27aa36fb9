"""The package's shape: the library never imports the application, no import cycles, files of one concept.

``docs/reference.md`` and STYLE.md section 9 say what each rule is for; these tests keep them true as the code
changes. Every module of ``minseg/`` is parsed with ``ast`` (nothing is imported), so an import inside a
function counts as much as one at the top.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minseg"
APP = "minseg.app"
# autograd defines Tensor, whose methods call ops' Functions, and ops builds on autograd's Function:
# the one cycle the engine keeps (also with ops as a package of submodules).
CYCLE_ALLOWED = {"minseg.autograd", "minseg.ops"}
LONG_FILE_MARKER = "Longer than 400 lines because"
MAX_LINES = 400


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name, path):
    """The minseg modules that module ``name`` imports anywhere in its file (``from a import b`` counts as
    ``a.b`` when that is a module, else as ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def strongly_connected_components(graph):
    """Tarjan's algorithm: the sets of modules that import each other, directly or through others."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_the_module_graph_is_read_from_the_sources():
    assert "minseg.data.layouts" in GRAPH["minseg.data"]
    assert "minseg.train.learner" in GRAPH["minseg.train"]
    assert {"minseg.app.train_command", "minseg.app.options"} <= GRAPH["minseg.app.cli"]
    assert "minseg.app.run" in GRAPH["minseg.app.train_command"]
    assert "minseg.viz" in GRAPH["minseg.app.run"]  # imported inside a function, still counted


def test_the_library_never_imports_the_application():
    library = {name: imports for name, imports in GRAPH.items() if name != APP and not name.startswith(APP + ".")}
    upward = {name: sorted(module for module in imports if module == APP or module.startswith(APP + "."))
              for name, imports in library.items()}
    assert {name: modules for name, modules in upward.items() if modules} == {}


def test_no_import_cycles_except_autograd_and_ops():
    def allowed(module):
        return module in CYCLE_ALLOWED or module.startswith("minseg.ops.")
    cycles = [sorted(component) for component in strongly_connected_components(GRAPH) if len(component) > 1
              and not all(allowed(module) for module in component)]
    assert cycles == []


def test_a_cycle_is_found_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(map(sorted, strongly_connected_components(graph))) == [["a", "b", "c"], ["d"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_file_over_400_lines_says_why(name):
    path = MODULES[name]
    lines = path.read_text(encoding="utf-8").count("\n")
    if lines > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert any(line.strip().startswith(LONG_FILE_MARKER) for line in docstring.splitlines()), (
            f"{path.relative_to(PACKAGE.parent)} has {lines} lines: split it into files of one concept, or say "
            f"in its module docstring, on a line starting with {LONG_FILE_MARKER!r}, why it is one concept")


# ---------------------------------------------------------------------------------------------
# docs/reference.md's reading-order table lists every file of the package
# ---------------------------------------------------------------------------------------------
REFERENCE = PACKAGE.parent / "docs" / "reference.md"
KERNELS = PACKAGE.parent / "kernels"


def reading_order_files(text):
    """The paths in the first column of the table under ``## Reading order`` in ``text``."""
    section = text.split("## Reading order", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [cell.strip().strip("`") for row in rows for cell in row.split("|")[1].split(",")]


def test_the_reading_order_table_is_read_from_the_page():
    page = ("## Reading order\n\n| file | concept |\n|---|---|\n| `a/b.py` | one |\n| `k/c.cu` | two |\n\n"
            "## Next\n| `x` |")
    assert reading_order_files(page) == ["a/b.py", "k/c.cu"]


def test_the_reading_order_table_lists_every_file_of_the_package_and_nothing_else():
    listed = reading_order_files(REFERENCE.read_text(encoding="utf-8"))
    files = [path.relative_to(PACKAGE.parent).as_posix()
             for path in [*sorted(PACKAGE.rglob("*.py")), *sorted(KERNELS.glob("*.cu"))]]
    missing = [path for path in files if path not in listed]
    assert missing == [], f"docs/reference.md's reading-order table does not list {missing}: add a row for each"
    gone = [path for path in listed if path not in files]
    assert gone == [], f"docs/reference.md's reading-order table lists {gone}, which do not exist: remove them"
