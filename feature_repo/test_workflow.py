"""A walk through this repository in the style of Feast's templates: apply, load, read online, push, read again.

Run it after the Dagster graph materialized the data and serving assets (parquet files under
`$REC_ARTIFACT_ROOT`, default `../data/artifacts`):

    cd feature_repo && python test_workflow.py

It uses `feature_store.yaml` (the embedded SQLite store); with
`FEAST_FS_YAML_FILE_PATH=feature_store.postgres.yaml` the `feast` CLI step targets PostgreSQL.
The Dagster assets `feast_registry` and `feast_online_features` do the same through
`rec_core.feature_store`, which also writes the Feast-ready copies the pushed views read offline.
"""

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

from rec_core.data.paths import table_file
from rec_core.feature_store import feast_source_frame, views

ARTIFACT_ROOT = Path(os.environ.get("REC_ARTIFACT_ROOT", Path(__file__).resolve().parent.parent / "data" / "artifacts"))


def run_demo():
    store = FeatureStore(repo_path=".")
    print("\n--- Run feast apply ---")
    subprocess.run(["feast", "apply"], check=True)

    print("\n--- Load user and item features into the online store ---")
    store.materialize(
        start_date=datetime(1970, 1, 2, tzinfo=UTC),
        end_date=datetime.now(UTC),
        feature_views=list(views.BATCH_VIEWS),
    )

    print("\n--- Push the user tower's embeddings ---")
    tower = views.USER_TOWER_EMBEDDINGS
    embeddings = pd.read_parquet(ARTIFACT_ROOT / table_file(tower.upstream))
    event = feast_source_frame(tower.name, embeddings, datetime.now(UTC))  # renamed to the Feast names
    store.push(tower.push_source, event, to=PushMode.ONLINE)

    user_id = str(embeddings.user_id.iloc[0])
    print(f"\n--- Online features of {user_id} through the user_serving feature service ---")
    fetch_online_features(store, user_id)

    print("\n--- Push a changed embedding, as a streaming job would, and read it back ---")
    changed = event.iloc[:1].copy()
    changed["user_embedding"] = [np.zeros(len(event.user_embedding.iloc[0]), dtype=np.float32)]
    store.push(tower.push_source, changed, to=PushMode.ONLINE)
    fetch_online_features(store, user_id)
    store.push(tower.push_source, event.iloc[:1], to=PushMode.ONLINE)  # restore the model's vector


def fetch_online_features(store: FeatureStore, user_id: str):
    returned = store.get_online_features(
        features=store.get_feature_service(views.USER_SERVING_SERVICE),
        entity_rows=[{"user_id": user_id}],
    ).to_dict()
    for key, value in sorted(returned.items()):
        shown = value[0]
        if isinstance(shown, list) and len(shown) > 6:
            shown = f"{shown[:6]}... ({len(shown)} values)"
        print(key, " : ", shown)


if __name__ == "__main__":
    run_demo()
