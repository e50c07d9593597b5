"""Module-level Feast objects for `cd feature_repo && feast apply`.

The Feast CLI collects definitions from module attributes, so this exposes every object of
`features.build_definitions` under its own name. Offline sources resolve under
`$REC_ARTIFACT_ROOT` (default: the project's `data/artifacts`), matching the Dagster assets.
"""

import os
from pathlib import Path

from features import build_definitions

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_ROOT = os.environ.get("REC_ARTIFACT_ROOT", str(PROJECT_ROOT / "data" / "artifacts"))

# feature_store.yaml keeps the SQLite registry and online store here; SQLite cannot create a missing folder.
(PROJECT_ROOT / "data" / "artifacts" / "feature_store").mkdir(parents=True, exist_ok=True)

globals().update({obj.name: obj for obj in build_definitions(ARTIFACT_ROOT)})
