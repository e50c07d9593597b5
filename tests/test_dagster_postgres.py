"""Issue 7: Dagster's own storage on the PostgreSQL server of this machine, over a real connection."""

import shutil
import uuid

import dagster as dg
import pytest

from rec_assets.assets.data import interactions, source_tables
from tests.conftest import REPO, cpu_resources

psycopg2 = pytest.importorskip("psycopg2")
pytestmark = pytest.mark.postgres


def _connect(db="postgres"):
    return psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=db)


@pytest.fixture()
def database():
    try:
        admin = _connect()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    admin.autocommit = True
    name = f"dagster_test_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield name
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_materialization_on_postgres_storage(tmp_path, database, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_USERNAME", "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_DB", database)
    root = tmp_path / "artifacts"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize(
            [source_tables, interactions],
            instance=instance,
            resources=cpu_resources(root),
            run_config={"ops": {"source_tables": {"config": {"n_users": 50, "n_items": 100, "n_interactions": 500}}}},
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("interactions"))
        assert event is not None and event.run_id == result.run_id
    with _connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone()[0] == 1
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (result.run_id,),
        )
        assert cur.fetchone()[0] == 4
