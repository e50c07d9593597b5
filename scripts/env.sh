# Sourced by the scripts: the embedded defaults and CPU settings every entry point shares.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/.dagster_home}"
export REC_ARTIFACT_ROOT="${REC_ARTIFACT_ROOT:-$ROOT/data/artifacts}"
# PyTorch's OpenMP busy-waiting makes 2-thread training far slower on a loaded machine.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
mkdir -p "$DAGSTER_HOME"
cp -f "$ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
