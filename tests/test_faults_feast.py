"""Issue 8 (Feast part): the online store survives a killed load and a PostgreSQL outage.

Each test loads version 0 of the upstream tables, then loads version 1 (every Feast view
differs between the two) and breaks that second load: a SIGKILL while a Feast-ready parquet
copy is half written or inside the SQLite transaction of a materialization, or the PostgreSQL
server stopped between sending a view's rows and committing them. Afterwards every view reads
back wholly as version 0 or wholly as version 1, never torn, and loading again completes.

The PostgreSQL tests run their own throwaway cluster (initdb into a temporary directory, a free
port, trust authentication) because they stop and restart it; the machine's shared server on
5432 is never touched. They are skipped, with the reason, when initdb/pg_ctl are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rec_core import feature_store as fs
from tests.test_feast import N_ITEMS, load_everything, upstream_tables, write_upstream

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLIP_DIM = 8

# view -> (feature read back online, entity key, upstream table, its column holding the feature)
VIEW_PROBES = {
    "user_features": ("preferences", "user_id", "users", "preferences"),
    "item_features": ("discounted_price", "item_id", "items", "discounted_price"),
    "item_text_embeddings": ("name_embedding", "item_id", "item_text_embeddings", "name_embedding"),
    "item_clip_embeddings": ("clip_embedding", "item_id", "item_clip_embeddings", "clip_embedding"),
    "item_tower_embeddings": ("item_embedding", "item_id", "item_embeddings", "embedding"),
    "user_text_embeddings": ("preferences_embedding", "user_id", "user_text_embeddings", "preferences_embedding"),
    "user_tower_embeddings": ("user_embedding", "user_id", "user_embeddings", "embedding"),
    "user_recommendations": ("top_k_item_ids", "user_id", "user_recommendations", "top_k_item_ids"),
    "user_history": ("purchase_item_ids", "user_id", "interactions", "purchase_item_ids"),
}
PUSHED = [*fs.PUSHED_VIEWS, "user_history"]  # the order `write_feast_sources` writes their copies in


def versioned_tables(version: int) -> dict[str, pd.DataFrame]:
    """Upstream tables in which every Feast view differs between version 0 and version 1."""
    tables = upstream_tables(seed=version)  # prices, vectors and recommendations come from the seed
    item_ids = list(tables["items"].item_id)
    tables["users"]["preferences"] = ["Audio|Kitchen", "Gaming"][version]
    tables["interactions"]["item_id"] = [
        item_ids[(7 * i + version) % N_ITEMS] for i in range(len(tables["interactions"]))
    ]
    tables["item_clip_embeddings"] = pd.DataFrame(
        {
            "item_id": item_ids,
            "clip_embedding": list(
                np.random.default_rng(100 + version).standard_normal((N_ITEMS, CLIP_DIM)).astype(np.float32)
            ),
        }
    )
    return tables


def expected_values(tables: dict[str, pd.DataFrame], view: str) -> tuple[list[str], list]:
    """The entity ids of a view and the probed feature's value for each, as the tables say."""
    feature, key, table, column = VIEW_PROBES[view]
    frame = (
        fs.user_history_frame(tables["interactions"], datetime.now(UTC)) if view == "user_history" else tables[table]
    )
    return [str(i) for i in frame[key]], list(frame[column])


def _same(read, expected) -> bool:
    if isinstance(expected, (list, np.ndarray)):
        return read is not None and np.array_equal(np.asarray(read), np.asarray(expected))
    return read == expected


def _which_version(read: list, before: list, after: list) -> str:
    """'before' or 'after' when every row is that version's, else 'torn'."""
    if len(read) == len(before) and all(_same(r, e) for r, e in zip(read, before)):
        return "before"
    if len(read) == len(after) and all(_same(r, e) for r, e in zip(read, after)):
        return "after"
    return "torn"


def online_versions(store, before: dict, after: dict) -> dict[str, str]:
    """For each view, which version of the tables the online store serves."""
    versions = {}
    for view, (feature, key, _, _) in VIEW_PROBES.items():
        ids, old = expected_values(before, view)
        _, new = expected_values(after, view)
        read = [row[feature] for row in fs.online_rows(store, [f"{view}:{feature}"], key, ids)]
        versions[view] = _which_version(read, old, new)
    return versions


def source_versions(root: Path, before: dict, after: dict) -> dict[str, str]:
    """For each Feast-ready parquet copy, which version it holds (it must be complete to be read at all)."""
    features = fs._features_module(None)
    versions = {}
    for view in PUSHED:
        feature = VIEW_PROBES[view][0]
        read = pq.read_table(features.source_dir(root) / features.PUSHED_VIEW_FILES[view]).column(feature).to_pylist()
        versions[view] = _which_version(read, expected_values(before, view)[1], expected_values(after, view)[1])
    return versions


# --- SIGKILL during a load on the embedded (SQLite) store ---------------------------------------------

# Runs what `feast_online_features` runs and stops, waiting to be killed, at one exact point:
# `source_write`: half of user_tower_embeddings' parquet copy is on disk under its temporary name;
# `online_write`: item_features is being materialized, half its rows upserted in the open transaction.
KILLED_LOAD = textwrap.dedent("""
    import io, os, sys, time
    from datetime import datetime, timezone
    from pathlib import Path

    root, data_dir, kill_point = sys.argv[1:4]

    def wait_for_the_kill():
        print("KILL-POINT", flush=True)
        time.sleep(600)

    if kill_point == "source_write":
        import pyarrow.parquet as pq
        write_table = pq.write_table

        def half_written(table, where, **kwargs):
            if Path(where).name.startswith(".user_tower_embeddings.parquet.tmp-"):
                whole = io.BytesIO()
                write_table(table, whole, **kwargs)
                with open(where, "wb") as fh:
                    fh.write(whole.getvalue()[: len(whole.getvalue()) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                wait_for_the_kill()
            return write_table(table, where, **kwargs)

        pq.write_table = half_written
    else:
        from feast.infra.online_stores import sqlite as feast_sqlite
        write_batch, serialize_key = feast_sqlite.SqliteOnlineStore.online_write_batch, feast_sqlite.serialize_entity_key
        writing = {"view": None, "rows": 0}

        def tracked_write(self, config, table, data, progress):
            writing.update(view=table.name, rows=0)
            return write_batch(self, config, table, data, progress)

        def counted_key(*args, **kwargs):  # called once per row, inside the write's transaction
            if writing["view"] == "item_features":
                writing["rows"] += 1
                if writing["rows"] == int(sys.argv[4]) + 1:
                    wait_for_the_kill()
            return serialize_key(*args, **kwargs)

        feast_sqlite.SqliteOnlineStore.online_write_batch = tracked_write
        feast_sqlite.serialize_entity_key = counted_key

    from rec_core import feature_store as fs

    store = fs.load_feature_store(profile="sqlite", data_dir=data_dir)
    snapshot = datetime.now(timezone.utc)
    fs.load_online(store, fs.write_feast_sources(root, fs.read_upstream_tables(root), snapshot), snapshot)
    print("FINISHED", flush=True)
""")


def load_until_killed(kill_point: str, root: Path, data_dir: Path) -> None:
    """Starts the load in a subprocess and SIGKILLs it once it reports reaching `kill_point`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    errors = root.parent / f"{kill_point}.stderr"
    with open(errors, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_LOAD, str(root), str(data_dir), kill_point, str(N_ITEMS // 2)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    watchdog = threading.Timer(240, proc.kill)  # a loader that hangs fails the test instead of blocking it
    watchdog.start()
    try:
        reached = False
        for line in proc.stdout:  # Feast prints its own progress lines too
            assert line.strip() != "FINISHED", "the loader finished before reaching its kill point"
            if line.strip() == "KILL-POINT":
                reached = True
                proc.send_signal(signal.SIGKILL)
                break
        assert reached, f"the loader never reached {kill_point}: {errors.read_text()[-3000:]}"
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("kill_point", ["source_write", "online_write"])
def test_sigkill_during_a_feast_load_loses_nothing(tmp_path, kill_point):
    root = tmp_path / "artifacts"
    data_dir = root / "feature_store"
    before, after = versioned_tables(0), versioned_tables(1)
    write_upstream(root, before)
    load_everything(fs.load_feature_store(profile="sqlite", data_dir=data_dir), root, before)

    write_upstream(root, after)  # the data and model assets produced new tables; the next load is killed
    load_until_killed(kill_point, root, data_dir)

    sources = source_versions(root, before, after)  # every copy readable under its name: none half written
    if kill_point == "source_write":
        killed_at = PUSHED.index("user_tower_embeddings")
        assert sources == {view: "after" if i < killed_at else "before" for i, view in enumerate(PUSHED)}
        leftovers = list(fs._features_module(None).source_dir(root).glob(".user_tower_embeddings.parquet.tmp-*"))
        assert len(leftovers) == 1  # the half-written file exists, but only under its temporary name
        with pytest.raises(pa.ArrowInvalid):
            pq.read_table(leftovers[0])
    else:
        assert set(sources.values()) == {"after"}
        assert (data_dir / "online_store.db-journal").exists()  # killed with item_features' transaction open

    # A backend starting now (SQLite rolls the hot journal back on open) reads consistent views.
    reader = fs.load_feature_store(profile="sqlite", data_dir=data_dir)
    served = online_versions(reader, before, after)
    if kill_point == "source_write":
        assert set(served.values()) == {"before"}
    else:  # user_features was committed before the kill; item_features' half-written transaction was rolled back
        assert served == {view: "after" if view == "user_features" else "before" for view in VIEW_PROBES}

    load_everything(reader, root, after)  # the retried load completes and serves exactly the new tables
    assert set(online_versions(reader, before, after).values()) == {"after"}
    assert set(source_versions(root, before, after).values()) == {"after"}


# --- PostgreSQL stopped during a load ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ThrowawayPostgres:
    """A PostgreSQL cluster of this test module's own, in a temporary directory on a free port."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="feast-faults-pg-"))  # also the socket directory
        self.data = self.directory / "data"
        # initdb refuses to run as root: run the server as the `postgres` OS user then.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self.as_owner, *command], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = (self.directory / "server.log").read_text() if (self.directory / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}{log[-2000:]}")

    def initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        """An immediate shutdown, as in a crash: open transactions are rolled back by recovery on the next start."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def new_database(self) -> fs.PostgresSettings:
        import psycopg

        if not self.running():  # an earlier test failed while it was stopped
            self.start()
        name = f"feast_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return fs.PostgresSettings(host="127.0.0.1", port=self.port, database=name, user="postgres", password="")


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def throwaway_postgres():
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    bindir = Path(bindirs[-1]) if bindirs else None
    if bindir is None or not (bindir / "initdb").exists() or not (bindir / "pg_ctl").exists():
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        pytest.skip("running as root, and initdb refuses root without a `postgres` user and runuser")
    server = ThrowawayPostgres(bindir)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def test_postgres_stopped_mid_load_keeps_committed_views_and_recovers(tmp_path, throwaway_postgres, monkeypatch):
    import psycopg
    from feast.infra.online_stores.postgres_online_store.postgres import PostgreSQLOnlineStore

    server = throwaway_postgres
    settings = server.new_database()
    root = tmp_path / "artifacts"
    before, after = versioned_tables(0), versioned_tables(1)
    write_upstream(root, before)
    store = fs.load_feature_store(profile="postgres", postgres=settings)
    load_everything(store, root, before)
    backend = fs.FeastFeatureSource(store)  # a long-lived reader holding its connection, as a backend does
    assert np.array_equal(backend.user_embedding("U000003"), before["user_embeddings"].embedding[3])

    # The server goes down after item_features' rows were sent inside their transaction, before the commit.
    write_batch, execute_many = PostgreSQLOnlineStore.online_write_batch, psycopg.Cursor.executemany
    writing = {}

    def tracked_write(self, config, table, data, progress):
        writing["view"] = table.name
        return write_batch(self, config, table, data, progress)

    def crash_after_sending(cursor, query, params, **kwargs):
        execute_many(cursor, query, params, **kwargs)
        if writing.get("view") == "item_features" and server.running():
            server.stop()

    monkeypatch.setattr(PostgreSQLOnlineStore, "online_write_batch", tracked_write)
    monkeypatch.setattr(psycopg.Cursor, "executemany", crash_after_sending)
    write_upstream(root, after)
    snapshot = datetime.now(UTC)
    frames = fs.write_feast_sources(str(root), fs.read_upstream_tables(str(root)), snapshot)
    where = rf"PostgreSQL feature store at 127\.0\.0\.1:{server.port}/{settings.database} is unreachable while"
    with pytest.raises(fs.FeatureStoreUnavailableError, match=where + " materializing user_features, item_features: "):
        fs.load_online(store, frames, snapshot)
    assert not server.running()
    with pytest.raises(fs.FeatureStoreUnavailableError, match=where + " reading online features: .*refused"):
        backend.user_embedding("U000003")  # the outage reaches a backend as the same named error
    monkeypatch.undo()

    server.start()
    # The same backend reconnects by itself; user_features was committed, item_features' open transaction
    # was rolled back, nothing had been pushed yet: every view wholly old or wholly new.
    assert online_versions(backend.store, before, after) == {
        view: "after" if view == "user_features" else "before" for view in VIEW_PROBES
    }

    fs.load_online(store, frames, snapshot)  # run again after the restart: everything new, exactly
    assert set(
        online_versions(fs.load_feature_store(profile="postgres", postgres=settings), before, after).values()
    ) == {"after"}


def _events(result, kind: str) -> list:
    return [event for event in result.all_events if event.event_type_value == kind]


def test_dagster_retries_the_feast_load_until_postgres_is_back(tmp_path, throwaway_postgres, monkeypatch):
    import dagster as dg

    from rec_assets.assets.feature_store import FEAST_RETRY_POLICY, feast_online_features, feast_registry
    from rec_assets.resources import ArtifactStore, FeastStoreResource, TableIOManager

    assert feast_online_features.op.retry_policy == FEAST_RETRY_POLICY and FEAST_RETRY_POLICY.max_retries >= 3
    assert feast_registry.op.retry_policy == FEAST_RETRY_POLICY

    server = throwaway_postgres
    settings = server.new_database()
    for name, value in settings.yaml_variables().items():  # what the assets' `profile: postgres` connects to
        monkeypatch.setenv(name, value)
    root = tmp_path / "artifacts"
    tables = versioned_tables(1)
    write_upstream(root, tables)
    upstream = [dg.AssetSpec(name) for name in tables]
    resources = {
        "artifacts": ArtifactStore(root=str(root)),
        "io_manager": TableIOManager(root=str(root)),
        "feast": FeastStoreResource(profile="postgres"),
    }

    registered = dg.materialize([*upstream, feast_registry], resources=resources, selection=[feast_registry])
    assert registered.success

    # An outage that ends 0.5 s after the load first fails on it, before the policy's first retry (2 s later).
    restart = threading.Timer(0.5, server.start)
    load_online = fs.load_online

    def load_online_during_outage(*args, **kwargs):
        try:
            return load_online(*args, **kwargs)
        except fs.FeatureStoreUnavailableError:
            if not restart.is_alive() and not server.running():
                restart.start()
            raise

    monkeypatch.setattr(fs, "load_online", load_online_during_outage)
    server.stop()
    try:
        loaded = dg.materialize(
            [*upstream, feast_registry, feast_online_features],
            resources=resources,
            selection=[feast_online_features],
            raise_on_error=False,
        )
    finally:
        if restart.is_alive():
            restart.join()
        if not server.running():  # the load never failed on the outage: bring the server back for teardown
            server.start()
    assert loaded.success
    retries = _events(loaded, "STEP_UP_FOR_RETRY")  # one, or more when a loaded machine restarts the server slowly
    assert 1 <= len(retries) <= FEAST_RETRY_POLICY.max_retries
    assert len(_events(loaded, "STEP_RESTARTED")) == len(retries)
    for retry in retries:
        error = retry.step_retry_data.error.to_string()
        assert "FeatureStoreUnavailableError" in error
        assert f"PostgreSQL feature store at 127.0.0.1:{server.port}/{settings.database} is unreachable" in error

    reader = fs.FeastFeatureSource.from_repo(profile="postgres", postgres=settings)
    assert np.array_equal(reader.user_embedding("U000005"), tables["user_embeddings"].embedding[5])
    assert len(loaded.asset_materializations_for_node("feast_online_features")) == 1


def test_bad_upstream_data_fails_the_feast_load_without_retrying(tmp_path):
    """Retries are for outages: a missing upstream table fails at once, naming the file."""
    import dagster as dg

    from rec_assets.assets.feature_store import feast_online_features
    from rec_assets.resources import ArtifactStore, FeastStoreResource, TableIOManager

    root = tmp_path / "artifacts"
    tables = versioned_tables(0)
    write_upstream(root, {name: frame for name, frame in tables.items() if name != "user_embeddings"})
    resources = {
        "artifacts": ArtifactStore(root=str(root)),
        "io_manager": TableIOManager(root=str(root)),
        "feast": FeastStoreResource(profile="sqlite"),
    }
    result = dg.materialize(
        [*(dg.AssetSpec(name) for name in tables), dg.AssetSpec("feast_registry"), feast_online_features],
        resources=resources,
        selection=[feast_online_features],
        raise_on_error=False,
    )
    assert not result.success
    assert not _events(result, "STEP_UP_FOR_RETRY")
    failure = _events(result, "STEP_FAILURE")[0].step_failure_data.error.to_string()
    assert "user_embeddings.parquet: missing; materialize the 'user_embeddings' asset" in failure
