#!/usr/bin/env bash
# The project's test command: provisions what the tests need (idempotent), then runs every layer.
#   bash scripts/test.sh                 # everything (what CI runs)
#   bash scripts/test.sh -m "not slow"   # the fast inner loop: unit + in-process integration
# Extra arguments go to pytest.
set -euo pipefail
PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$PACK_DIR/scripts/provision.sh" --dev
cd "$PACK_DIR"
exec .venv/bin/python -m pytest -c tests/pytest.ini -p no:cacheprovider "$@"
