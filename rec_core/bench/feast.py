"""Feast online store: read latency on SQLite and PostgreSQL, and loading throughput.

`python -m rec_core.bench feast [--users N --items N ...] --json out.json`

Builds a synthetic catalog with random tower and text vectors, applies `feature_repo/` to an
embedded store (SQLite) and to a fresh PostgreSQL database (created and dropped here), loads both
(materialize + push) and times online reads through the Feast Python SDK in this process:
one user's serving features (the `user_serving` service: profile, history, tower embedding,
precomputed top-k) and the display fields of 100 items (`item_display`). Reads are timed one by
one after a warm-up; p50 and p99 come from the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from rec_core.bench.common import int_options_parser, median, percentile
from rec_core.data.paths import FEATURE_STORE_DIR, table_file
from rec_core.storage import write_parquet


def _options(argv: list[str]) -> argparse.Namespace:
    parser = int_options_parser(
        "python -m rec_core.bench feast",
        {
            "--users": (2000, "users in the synthetic catalog"),
            "--items": (5000, "items in the synthetic catalog"),
            "--interactions": (50_000, None),
            "--tower-dim": (64, "user/item tower embedding size"),
            "--text-dim": (384, "text embedding size"),
            "--reads": (300, "timed reads per measurement"),
            "--warmup": (20, "untimed reads before each measurement"),
            "--seed": (0, None),
        },
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL (its metrics are then absent)")
    return parser.parse_args(argv)


def _tables(opts: argparse.Namespace) -> dict[str, pd.DataFrame]:
    """Synthetic users, items and interactions plus random vectors in the upstream assets' shapes."""
    from rec_core.generation.synthetic import GeneratorConfig, generate_dataset

    data = generate_dataset(
        GeneratorConfig(n_users=opts.users, n_items=opts.items, n_interactions=opts.interactions, seed=opts.seed)
    )
    rng = np.random.default_rng(opts.seed)
    user_ids, item_ids = list(data.users.user_id), list(data.items.item_id)

    def vectors(n: int, dim: int) -> list[np.ndarray]:
        return list(rng.standard_normal((n, dim)).astype(np.float32))

    return {
        "users": data.users,
        "items": data.items,
        "interactions": data.interactions,
        "item_text_embeddings": pd.DataFrame(
            {
                "item_id": item_ids,
                "name_embedding": vectors(len(item_ids), opts.text_dim),
                "description_embedding": vectors(len(item_ids), opts.text_dim),
            }
        ),
        "user_text_embeddings": pd.DataFrame(
            {"user_id": user_ids, "preferences_embedding": vectors(len(user_ids), opts.text_dim)}
        ),
        "item_clip_embeddings": pd.DataFrame({"item_id": pd.Series([], dtype=str), "clip_embedding": []}),
        "item_embeddings": pd.DataFrame({"item_id": item_ids, "embedding": vectors(len(item_ids), opts.tower_dim)}),
        "user_embeddings": pd.DataFrame({"user_id": user_ids, "embedding": vectors(len(user_ids), opts.tower_dim)}),
        "user_recommendations": pd.DataFrame(
            {
                "user_id": user_ids,
                "top_k_item_ids": [list(rng.choice(item_ids, 20, replace=False)) for _ in user_ids],
                "top_k_scores": vectors(len(user_ids), 20),
            }
        ),
    }


def _timed_ms(fn, calls: list, warmup: int) -> list[float]:
    for args in calls[:warmup]:
        fn(*args)
    times = []
    for args in calls:
        start = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _measure(store, name: str, root: Path, tables: dict, opts: argparse.Namespace) -> dict[str, float]:
    from rec_core import feature_store as fs

    fs.apply_definitions(store, fs.load_definitions(artifact_root=str(root)))
    snapshot = datetime.now(UTC)
    frames = fs.write_feast_sources(str(root), tables, snapshot)
    load = fs.load_online(store, frames, snapshot)
    source = fs.FeastFeatureSource(store)
    rng = np.random.default_rng(opts.seed)
    user_ids = list(tables["users"].user_id)
    item_ids = list(tables["items"].item_id)
    users = [(user_ids[i],) for i in rng.integers(0, len(user_ids), opts.reads)]
    batches = [([item_ids[i] for i in rng.choice(len(item_ids), 100, replace=False)],) for _ in range(opts.reads)]
    probe = source.serving_features(users[0][0])
    if probe["user_embedding"] is None or probe["preferences"] is None:
        raise RuntimeError(f"{name}: the online store returned no features for {users[0][0]} after loading")
    user_ms = _timed_ms(source.serving_features, users, opts.warmup)
    items_ms = _timed_ms(source.item_display, batches, opts.warmup)
    return {
        f"{name}_user_read_p50_ms": median(user_ms),
        f"{name}_user_read_p99_ms": percentile(user_ms, 99),
        f"{name}_items100_read_p50_ms": median(items_ms),
        f"{name}_items100_read_p99_ms": percentile(items_ms, 99),
        f"{name}_materialize_rows_per_s": load.materialized_rows / load.materialize_seconds,
        f"{name}_push_rows_per_s": load.pushed_rows / load.push_seconds,
    }


def run(argv: list[str]) -> dict[str, float]:
    from rec_core import feature_store as fs

    opts = _options(argv)
    tables = _tables(opts)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="feast_bench_") as tmp:
        root = Path(tmp) / "artifacts"
        for name in ("users", "items"):
            write_parquet(tables[name], root / table_file(name))
        stores = ["sqlite"] + ([] if opts.no_postgres else ["postgres"])
        for name in tqdm(stores, desc="feast stores", unit="store"):
            if name == "sqlite":
                results |= _measure(
                    fs.load_feature_store(profile="sqlite", data_dir=root / FEATURE_STORE_DIR), name, root, tables, opts
                )
            else:
                with _scratch_database() as settings:
                    results |= _measure(
                        fs.load_feature_store(profile="postgres", postgres=settings), name, root, tables, opts
                    )
    results["materialize_rows_per_s"] = results["sqlite_materialize_rows_per_s"]
    results["users"], results["items"], results["reads_per_measurement"] = (
        float(opts.users),
        float(opts.items),
        float(opts.reads),
    )
    return results


def admin_connection(settings):
    """An autocommit connection to the server's `postgres` database, where databases are created and dropped."""
    import psycopg

    return psycopg.connect(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password,
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    )


class _scratch_database:
    """A PostgreSQL database for one run, dropped afterwards (connection from FEAST_POSTGRES_*)."""

    def __enter__(self):
        import psycopg

        from rec_core.feature_store import PostgresSettings

        self.base = PostgresSettings.from_env()
        self.name = f"feast_bench_{uuid.uuid4().hex[:12]}"
        try:
            with admin_connection(self.base) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')
        except psycopg.OperationalError as exc:
            raise SystemExit(
                f"PostgreSQL at {self.base.host}:{self.base.port} is unreachable ({exc}); "
                "start it or pass --no-postgres"
            ) from None
        return PostgresSettings.from_env(database=self.name)

    def __exit__(self, *exc_info):
        with admin_connection(self.base) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
