"""The registry of Feast views (`rec_core.feature_store.views`) is the one list `feature_repo/` declares."""

import shutil

import pytest

from rec_core import feature_store as fs
from rec_core.feature_store import views
from tests.conftest import REPO


def test_the_declared_views_are_the_registry_s():
    from feast import FeatureView
    from feast.types import Array, Float32, String

    objects = {o.name: o for o in fs.load_definitions(artifact_root="/root")}
    declared = {name for name, o in objects.items() if isinstance(o, FeatureView)}
    assert declared == {view.name for view in views.ALL_VIEWS}
    feast_type = {"float_vector": Array(Float32), "string": String, "string_list": Array(String)}
    for view in views.ALL_PUSHED:
        feast_view = objects[view.name]
        assert [(f.name, f.dtype) for f in feast_view.features] == [(f.name, feast_type[f.kind]) for f in view.features]
        assert feast_view.stream_source.name == view.push_source
        assert feast_view.batch_source.path == str(views.source_dir("/root") / views.PUSHED_VIEW_FILES[view.name])
        assert [objects[entity].join_key for entity in feast_view.entities] == [view.key]
    for view in (views.USER_FEATURES, views.ITEM_FEATURES):
        assert objects[view.name].batch_source.path == f"/root/{view.upstream}.parquet"
        assert [objects[entity].join_key for entity in objects[view.name].entities] == [view.key]
    for ref in (*views.USER_PROFILE_REFS, *views.USER_HISTORY_REFS):  # every feature a backend reads is declared
        name, feature = ref.split(":")
        assert feature in {f.name for f in objects[name].features}, ref


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            "return [*objects, FeatureView(name='user_clicks', entities=[objects[1]], schema=[Field(name='n', dtype=Int64)],"
            " source=objects[3])]",
            "declared but not in the registry: user_clicks",
        ),
        ("return [o for o in objects if o.name != 'user_history']", "in the registry but not declared: user_history"),
    ],
)
def test_a_repository_whose_views_differ_from_the_registry_is_refused(tmp_path, edit, message):
    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    features = repo / "features.py"
    features.write_text(
        features.read_text()
        + (
            "\n\n_declared = build_definitions\n\n\n"
            "def build_definitions(artifact_root):\n"
            "    objects = _declared(artifact_root)\n"
            f"    {edit}\n"
        )
    )
    with pytest.raises(ValueError, match=rf"features\.py: its feature views differ .*{message}"):
        fs.load_definitions(repo, artifact_root=str(tmp_path))


def test_editing_the_registry_changes_the_definitions_version(tmp_path, monkeypatch):
    edited = tmp_path / "views.py"
    original = REPO.joinpath("rec_core", "feature_store", "views.py").read_text()
    renamed = original.replace('Feature("top_k_scores", "float_vector")', 'Feature("top_k_score", "float_vector")')
    assert renamed != original  # the edit below must really change the registry
    edited.write_text(renamed)
    before = fs.definitions_version()
    monkeypatch.setattr(views, "__file__", str(edited))
    assert fs.definitions_version() != before  # the feast_registry asset's code_version moves with the registry


def test_references_and_kinds_are_checked():
    assert views.USER_TOWER_EMBEDDINGS.ref("model_version") == "user_tower_embeddings:model_version"
    with pytest.raises(KeyError, match="user_tower_embeddings has no feature 'modelversion'"):
        views.USER_TOWER_EMBEDDINGS.ref("modelversion")
    with pytest.raises(ValueError, match="feature x: unknown kind 'int8'"):
        views.Feature("x", "int8")
