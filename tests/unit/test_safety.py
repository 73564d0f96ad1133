"""The pack makes no network calls, loads no pickles, evaluates no strings as code, and its web
extension inserts no markup built from text into the page: checked by scanning its sources."""
import pathlib
import re

import pytest

PACK = pathlib.Path(__file__).resolve().parents[2]
PYTHON_SOURCES = sorted([PACK / "__init__.py", PACK / "gag_plot.py", *(PACK / "gag_core").glob("*.py"), *(PACK / "nodes").glob("*.py")])
WEB_SOURCES = sorted((PACK / "web").glob("*.js"))

FORBIDDEN_PYTHON = {
    "network access": r"\bimport (socket|requests|httpx|urllib3)\b|\bfrom (socket|requests|httpx|urllib3)\b|"
                      r"urllib\.request|http\.client|ClientSession|urlopen",
    "pickle loading": r"\bimport pickle\b|\bpickle\.|torch\.load\(|\bimport dill\b|\bjoblib\b",
    "string evaluation": r"(?<![\w.])(eval|exec|compile)\(|__import__\(|importlib\.import_module\(",
    "subprocesses": r"\bsubprocess\b|os\.system\(|os\.popen\(",
}
FORBIDDEN_JS = {
    "markup from text": r"\.innerHTML\b|\.outerHTML\b|insertAdjacentHTML|document\.write",
    "string evaluation": r"(?<![\w.])eval\(|new Function\(|setTimeout\(\s*['\"]",
    "network beyond the ComfyUI server": r"\bfetch\(|XMLHttpRequest|WebSocket\(",
}


def test_sources_found():
    assert len(PYTHON_SOURCES) >= 10 and WEB_SOURCES


@pytest.mark.parametrize("path", PYTHON_SOURCES, ids=lambda p: str(p.relative_to(PACK)))
@pytest.mark.parametrize("what", FORBIDDEN_PYTHON)
def test_python_source(path, what):
    hits = [f"{path.name}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(FORBIDDEN_PYTHON[what], line) and not line.lstrip().startswith("#")]
    assert not hits, f"{what}: {hits}"


@pytest.mark.parametrize("path", WEB_SOURCES, ids=lambda p: p.name)
@pytest.mark.parametrize("what", FORBIDDEN_JS)
def test_web_source(path, what):
    hits = [f"{path.name}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(FORBIDDEN_JS[what], line)]
    assert not hits, f"{what}: {hits}"
