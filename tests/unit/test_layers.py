"""The layers of ARCHITECTURE.md: gag_core imports torch, the standard library and itself only, gag_plot
nothing of the pack, and the shipped code nothing of the harness, the tests or the benchmarks."""
import ast
import pathlib
import sys

import pytest

PACK = pathlib.Path(__file__).resolve().parents[2]
NOT_SHIPPED = {"harness", "tests", "benchmarks", "scripts", "tiny_models", "comfy_env", "oracle"}


def imported_modules(path):
    """Top-level names a source imports; relative imports as '.' plus the name ('..' for the parent)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            names.add("." * node.level + module if node.level else module)
    return names


@pytest.mark.parametrize("path", sorted((PACK / "gag_core").glob("*.py")), ids=lambda p: p.name)
def test_gag_core_imports_torch_and_itself_only(path):
    outside = {name for name in imported_modules(path) if not name.startswith(".")}
    foreign = outside - {"torch"} - set(sys.stdlib_module_names)
    assert not foreign, f"{path.name} imports {foreign}"
    assert not {name for name in imported_modules(path) if name.startswith("..")}


def test_gag_plot_imports_no_part_of_the_pack():
    assert imported_modules(PACK / "gag_plot.py") <= {"math", "PIL"}


@pytest.mark.parametrize("path", [PACK / "__init__.py", PACK / "gag_plot.py", *sorted((PACK / "nodes").glob("*.py"))],
                         ids=lambda p: p.name)
def test_shipped_code_imports_nothing_that_is_not_shipped(path):
    names = {name.lstrip(".") for name in imported_modules(path)}
    assert not names & NOT_SHIPPED, f"{path.name} imports {names & NOT_SHIPPED}"
