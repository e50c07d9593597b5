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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from feast import FeatureStore
from feast.data_source import PushMode

ARTIFACT_ROOT = Path(os.environ.get("REC_ARTIFACT_ROOT", Path(__file__).resolve().parent.parent / "data" / "artifacts"))


def run_demo():
    store = FeatureStore(repo_path=".")
    print("\n--- Run feast apply ---")
    subprocess.run(["feast", "apply"], check=True)

    print("\n--- Load user and item features into the online store ---")
    store.materialize(
        start_date=datetime(1970, 1, 2, tzinfo=timezone.utc),
        end_date=datetime.now(timezone.utc),
        feature_views=["user_features", "item_features"],
    )

    print("\n--- Push the user tower's embeddings ---")
    embeddings = pd.read_parquet(ARTIFACT_ROOT / "user_embeddings.parquet")
    event = embeddings.rename(columns={"embedding": "user_embedding"})[["user_id", "user_embedding"]]
    event["event_timestamp"] = datetime.now(timezone.utc)
    store.push("user_tower_embeddings_push", event, to=PushMode.ONLINE)

    user_id = str(embeddings.user_id.iloc[0])
    print(f"\n--- Online features of {user_id} through the user_serving feature service ---")
    fetch_online_features(store, user_id)

    print("\n--- Push a changed embedding, as a streaming job would, and read it back ---")
    changed = event.iloc[:1].copy()
    changed["user_embedding"] = [np.zeros(len(event.user_embedding.iloc[0]), dtype=np.float32)]
    store.push("user_tower_embeddings_push", changed, to=PushMode.ONLINE)
    fetch_online_features(store, user_id)
    store.push("user_tower_embeddings_push", event.iloc[:1], to=PushMode.ONLINE)  # restore the model's vector


def fetch_online_features(store: FeatureStore, user_id: str):
    returned = store.get_online_features(
        features=store.get_feature_service("user_serving"),
        entity_rows=[{"user_id": user_id}],
    ).to_dict()
    for key, value in sorted(returned.items()):
        shown = value[0]
        if isinstance(shown, list) and len(shown) > 6:
            shown = f"{shown[:6]}... ({len(shown)} values)"
        print(key, " : ", shown)


if __name__ == "__main__":
    run_demo()
