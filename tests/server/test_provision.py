"""The provisioning script is idempotent: on a provisioned checkout it installs nothing."""
import pathlib
import subprocess
import sys
import time

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]


def test_second_provisioning_run_installs_nothing():
    version = (pathlib.Path(sys.prefix) / ".gag_comfyui_version").read_text().strip()
    start = time.monotonic()
    result = subprocess.run(["bash", str(PACK_DIR / "scripts" / "provision.sh"), "--dev", "--comfyui", version],
                            capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines()
             if line.startswith("[provision]") and not line.startswith("[provision] ready")]
    assert not steps, f"a second run did work: {steps}"
    assert elapsed < 30, f"a second run took {elapsed:.1f} s"


def test_unknown_version_is_refused_with_the_valid_ones():
    result = subprocess.run(["bash", str(PACK_DIR / "scripts" / "provision.sh"), "--comfyui", "0.2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "'0.2' is not a tested version (valid: pinned, 0.33)" in result.stderr
