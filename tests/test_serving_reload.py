"""`Recommender.reload` with a feature source passed to `load`: vectors are checked against the new release's model.

A regression test: `reload` once wrapped the previous release's checked source instead of the
source given to `load`, so after a release of a new model, the feature store's vectors of that
model were refused (checked against the old model) and the old release's vectors were scored
against the new index.
"""

import dataclasses
import uuid

import numpy as np

from rec_core.index import ItemIndex
from rec_core.release import publish_release
from rec_core.serving import Recommender, vector_table
from rec_core.storage import write_parquet

DIM, K = 16, 10


def _stage(root, model: str, user_ids, user_vectors, item_ids, item_vectors) -> None:
    """One model's serving artifacts, as the serving assets write them before a release."""
    write_parquet(vector_table("user_id", user_ids, user_vectors, model), root / "user_embeddings.parquet")
    write_parquet(vector_table("item_id", item_ids, item_vectors, model), root / "item_embeddings.parquet")
    index = ItemIndex.build(item_ids, item_vectors)
    report = dataclasses.replace(index.report, build_id=uuid.uuid4().hex)
    ItemIndex(index.item_ids, index.vectors, index.index, report, index.config).save(root / "item_index")


def test_reload_checks_the_feature_sources_vectors_against_the_new_release(tmp_path, small_dataset):
    for name in ("users", "items", "interactions"):
        write_parquet(getattr(small_dataset, name), tmp_path / f"{name}.parquet")
    user_ids, item_ids = small_dataset.users["user_id"].tolist(), small_dataset.items["item_id"].tolist()
    rng = np.random.default_rng(0)
    unit = [rng.normal(size=(n, DIM)).astype(np.float32) for n in (len(user_ids), len(item_ids)) * 2]
    user_a, item_a, user_b, item_b = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in unit)
    row_of = {user_id: row for row, user_id in enumerate(user_ids)}

    class StoreWithModelB:
        """A feature store already holding the vectors of model B, which is not released yet."""

        def user_embedding(self, user_id):
            return user_b[row_of[user_id]]

        def user_vector(self, user_id):
            return user_b[row_of[user_id]], "model-B"

        def user_profile(self, user_id):
            return None

    _stage(tmp_path, "model-A", user_ids, user_a, item_ids, item_a)
    publish_release(tmp_path)
    served = Recommender.load(tmp_path, feature_source=StoreWithModelB())
    _stage(tmp_path, "model-B", user_ids, user_b, item_ids, item_b)
    publish_release(tmp_path)
    assert served.reload() and served.release["model_version"] == "model-B"

    users = user_ids[:20]
    from_store = [served.recommend(u, k=K, filters=[]).item_ids for u in users]
    expected = [np.argsort(-(item_b @ user_b[row_of[u]]), kind="stable")[:K] for u in users]
    assert from_store == [[item_ids[row] for row in rows] for rows in expected]
