"""The provisioning script is idempotent: on a provisioned checkout it installs nothing."""
import pathlib
import subprocess
import time

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]


def test_second_provisioning_run_installs_nothing():
    start = time.monotonic()
    result = subprocess.run(["bash", str(PACK_DIR / "scripts" / "provision.sh"), "--dev"],
                            capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines()
             if line.startswith("[provision]") and not line.startswith("[provision] ready")]
    assert not steps, f"a second run did work: {steps}"
    assert elapsed < 30, f"a second run took {elapsed:.1f} s"
