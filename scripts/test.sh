#!/usr/bin/env bash
# Installs the project into .venv and runs the test suite. `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install_system.sh
source scripts/env.sh
# lint and format are part of the suite: configured in pyproject.toml ([tool.ruff])
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export REC_ARTIFACT_ROOT="$(mktemp -d)/artifacts"   # tests never touch the user's artifacts
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
if [ "$status" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$status"
