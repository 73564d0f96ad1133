"""The Registry's own publishing checks pass, and pyproject declares what they leave unchecked."""
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((PACK_DIR / "pyproject.toml").read_text())
TESTED_COMFYUI_VERSIONS = ["0.3.75", "0.33.0"]


def test_comfy_node_validate_passes(tmp_path):
    comfy = pathlib.Path(sys.executable).parent / "comfy"
    assert comfy.exists(), "comfy-cli is not installed here: run scripts/provision.sh --dev"
    env = {
        **os.environ,
        # A fresh HOME: comfy-cli reads its telemetry consent from and writes its config under HOME.
        "HOME": str(tmp_path),
        # Telemetry and the update check are comfy-cli's only network use; both are opted out.
        "DO_NOT_TRACK": "1",
        "COMFY_NO_UPDATE_CHECK": "1",
        # validate runs `ruff check .` in the pack; keep its cache out of the work tree.
        "RUFF_NO_CACHE": "true",
    }
    result = subprocess.run([str(comfy), "--skip-prompt", "node", "validate"], cwd=PACK_DIR, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout
    # Problems validate finds in pyproject (license, version ranges, classifiers) are warnings at exit 0.
    assert "Warning" not in result.stdout, result.stdout
    assert "All validation checks passed successfully" in result.stdout, result.stdout


def test_license_file_exists():
    assert (PACK_DIR / PYPROJECT["project"]["license"]["file"]).is_file()


def test_icon_and_includes_exist():
    comfy = PYPROJECT["tool"]["comfy"]
    assert (PACK_DIR / comfy["Icon"]).is_file()
    for path in comfy["includes"]:
        assert (PACK_DIR / path).exists(), path


def test_includes_hold_every_module_the_pack_imports():
    """What the pack's entry point and nodes import from the pack itself is published with it."""
    includes = set(PYPROJECT["tool"]["comfy"]["includes"])
    sources = [PACK_DIR / "__init__.py", *sorted((PACK_DIR / "nodes").glob("*.py"))]
    for source in sources:
        dots = "." if source.parent == PACK_DIR else ".."
        for line in source.read_text().splitlines():
            if line.startswith(f"from {dots}") and not line.startswith(f"from {dots}."):
                top = line.split()[1][len(dots):].split(".")[0]
                if top:
                    assert top in includes or f"{top}.py" in includes, f"{source.name} imports {top}, not in includes"


@pytest.mark.parametrize("version", TESTED_COMFYUI_VERSIONS)
def test_requires_comfyui_admits_the_tested_versions(version):
    specifiers = pytest.importorskip("packaging.specifiers")
    declared = PYPROJECT["tool"]["comfy"]["requires-comfyui"]
    assert version in specifiers.SpecifierSet(declared), f"requires-comfyui {declared!r} excludes {version}"
