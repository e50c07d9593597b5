#!/usr/bin/env bash
# docs/images/explorer.png: headless Chromium photographs the explorer page of the recommendation
# service with the most active user picked (their latest items beside their recommendations).
#   scripts/screenshot_explorer.sh [ARTIFACT_ROOT]
# Without ARTIFACT_ROOT, the small graph (configs/small.yaml) is first materialized into a temporary
# root, so the product images are the product_images asset's. Needs Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
ARTIFACTS="${1:-}"  # not ROOT: scripts/env.sh sets that to the checkout
if [ -z "$ARTIFACTS" ]; then
  work="$(mktemp -d)"
  ARTIFACTS="$work/artifacts"
  export DAGSTER_HOME="$work/dagster_home"
  source scripts/env.sh
  REC_ARTIFACT_ROOT="$ARTIFACTS" .venv/bin/dagster asset materialize -m rec_assets --select '*' -c configs/small.yaml
  echo "materialized into $ARTIFACTS (Dagster home $DAGSTER_HOME)"
else
  source scripts/env.sh
fi
PORT="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
.venv/bin/python -m rec_core.service --root "$ARTIFACTS" --port "$PORT" --reload-interval 0 &
SERVICE=$!
trap 'kill $SERVICE' EXIT
for _ in $(seq 180); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 1
done
mkdir -p docs/images
profile="$(mktemp -d)"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile" --window-size=1400,1000 \
  --virtual-time-budget=20000 --screenshot=docs/images/explorer.png "http://127.0.0.1:$PORT/"
rm -rf "$profile"
echo "wrote docs/images/explorer.png"
