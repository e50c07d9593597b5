#!/usr/bin/env bash
# Installs the project into .venv and materializes every asset on the embedded defaults
# (SQLite Dagster storage in .dagster_home/, artifacts in data/artifacts/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
source scripts/env.sh
.venv/bin/dagster asset materialize -m rec_assets --select '*' "$@"
cat <<MSG

Done. Artifacts: $REC_ARTIFACT_ROOT
Dagster storage: $DAGSTER_HOME
Open the UI:  source scripts/env.sh && .venv/bin/dagster dev   (then http://127.0.0.1:3000)
MSG
