"""Feast on PostgreSQL: apply, materialize, push and online reads over a real connection.

Each test works in a database it creates and drops (`feast_test_<random>`) on the server at
127.0.0.1:5432 (trust authentication; FEAST_POSTGRES_HOST/PORT/USER/PASSWORD override it).
Skipped, with the reason, only when the server cannot be reached.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from rec_core import feature_store as fs
from rec_core.bench.feast import admin_connection
from tests.test_feast import check_reapply_and_rename, check_round_trip, upstream_tables, write_upstream

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_settings():
    """Settings pointing at a fresh database, dropped (with any open Feast connections) afterwards."""
    import psycopg

    base = fs.PostgresSettings.from_env()
    try:
        admin = admin_connection(base)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {base.host}:{base.port} is unreachable: {exc}")
    name = f"feast_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield fs.PostgresSettings.from_env(database=name)
    finally:
        with admin_connection(base) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_round_trip_reapply_and_rename(tmp_path, postgres_settings):
    root = tmp_path / "artifacts"
    tables = upstream_tables(seed=1)
    write_upstream(root, tables)
    store = fs.load_feature_store(profile="postgres", postgres=postgres_settings)
    assert store.config.online_store.type == "postgres"
    check_round_trip(store, root, tables)

    # A second process (a backend) reading the same database sees the same vectors.
    reader = fs.FeastFeatureSource.from_repo(profile="postgres", postgres=postgres_settings)
    assert np.array_equal(reader.user_embedding("U000007"), tables["user_embeddings"].embedding[7])

    check_reapply_and_rename(store, root)


def test_postgres_tables_live_in_the_test_database(tmp_path, postgres_settings):
    """The registry and online tables are created in the configured database, not elsewhere."""
    import psycopg

    root = tmp_path / "artifacts"
    write_upstream(root, upstream_tables(seed=2))
    store = fs.load_feature_store(profile="postgres", postgres=postgres_settings)
    fs.apply_definitions(store, fs.load_definitions(artifact_root=str(root)))
    s = postgres_settings
    with psycopg.connect(host=s.host, port=s.port, user=s.user, password=s.password, dbname=s.database) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"recommender_user_tower_embeddings", "recommender_item_features", "feature_views"} <= tables
