"""Outages of the feature store's database, told apart from bad data.

A lost or refused PostgreSQL connection, deep in Feast (psycopg or SQLAlchemy), comes out as one
named error, `FeatureStoreUnavailableError`: worth retrying (the Dagster assets do) or falling
back from (a backend can), unlike bad data, which waiting will not fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore


class FeatureStoreUnavailableError(ConnectionError):
    """The PostgreSQL server behind the online store or registry cannot be reached.

    Raised in place of the driver's error so that a caller can tell an outage, worth retrying,
    from bad data, which is not. The message names the server and what was being done.
    """


@contextlib.contextmanager
def database_errors(store: FeatureStore, action: str) -> Iterator[None]:
    """Turns a lost or refused database connection during `action` into `FeatureStoreUnavailableError`."""
    _forget_lost_connection(store)
    try:
        yield
    except Exception as exc:
        cause = _unreachable_server_error(exc)
        if cause is None:
            raise
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise FeatureStoreUnavailableError(
            f"{_describe_server(store)} is unreachable while {action}: {reason}"
        ) from exc


def _unreachable_server_error(exc: BaseException) -> BaseException | None:
    """The psycopg error behind `exc` (SQLAlchemy keeps it as `.orig`) when the server is unreachable or gone."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - installed with feast[postgres]
        return None
    cause = getattr(exc, "orig", None) or exc
    return cause if isinstance(cause, (psycopg.OperationalError, psycopg.InterfaceError)) else None


def _describe_server(store: FeatureStore) -> str:
    online = store.config.online_store
    if online.type == "postgres":
        return f"PostgreSQL feature store at {online.host}:{online.port}/{online.database}"
    return f"{online.type} feature store"


def _forget_lost_connection(store: FeatureStore) -> None:
    """Forgets the PostgreSQL online store's connection once the server has closed it, so the next call connects afresh.

    Why a private attribute: Feast 0.67's PostgreSQL online store keeps one psycopg connection per
    store (`conn_type: singleton`, the default) in `_conn` and never reopens it, so after a server
    restart every read of a long-lived store (a backend's) would fail with "the connection is
    lost". Feast has no public way to reset it, and the public alternative, `conn_type: pool`, is
    worse here: a connection that fails mid-call is never handed back to the pool (its `putconn`
    is not in a `finally`), and while the server is down each call waits out the pool's 30 s
    timeout instead of failing at once. So this one function reads and clears `_conn`; the online
    store is reached through public properties, and a dead connection is recognized by psycopg's
    public `closed` and `broken`. (The registry reconnects by itself: `pool_pre_ping` in the
    profile's SQLAlchemy settings.)
    """
    if store.config.online_store.type != "postgres":
        return  # the embedded SQLite store has no server to lose
    online = store.provider.online_store
    connection = online._conn
    if connection is not None and (connection.closed or connection.broken):
        online._conn = None
