"""Where the feature store lives: the Feast repository, the profile (embedded SQLite or PostgreSQL) and its settings.

The repository's `feature_store.yaml` is the embedded profile (SQLite online store and registry,
parquet offline store) and `feature_store.postgres.yaml` the production one (PostgreSQL online
store and registry). This module reads those files, so the command line (`cd feature_repo &&
feast apply`) and the library use one configuration, and moves the embedded databases under a
`data_dir` so tests and assets can keep them beside their artifacts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import yaml

from rec_core.data.paths import FEATURE_STORE_DIR, default_artifact_root
from rec_core.storage import require_local

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

PROFILES = ("sqlite", "postgres")
PROFILE_FILES = {"sqlite": "feature_store.yaml", "postgres": "feature_store.postgres.yaml"}


def project_root() -> Path:
    """The checkout that holds `rec_core/` and `feature_repo/`."""
    return Path(__file__).resolve().parents[2]


def default_repo_path() -> Path:
    """The Feast repository: `$REC_FEATURE_REPO`, else `<project>/feature_repo`."""
    return Path(os.environ.get("REC_FEATURE_REPO", project_root() / "feature_repo"))


def default_data_dir(artifact_root: str | None = None) -> Path:
    """Where the embedded store and registry live: `$REC_FEAST_DATA_DIR`, else `<artifact root>/feature_store`.

    A root on object storage has no such place: the error says to set `REC_FEAST_DATA_DIR` or use PostgreSQL.
    """
    if os.environ.get("REC_FEAST_DATA_DIR"):
        return Path(os.environ["REC_FEAST_DATA_DIR"])
    root = require_local(
        artifact_root or default_artifact_root(),
        "the sqlite profile keeps its databases on a local disk; set REC_FEAST_DATA_DIR "
        "(or use REC_FEAST_PROFILE=postgres)",
    )
    return root / FEATURE_STORE_DIR


def default_profile() -> str:
    """`$REC_FEAST_PROFILE`: `sqlite` (embedded, the default) or `postgres`."""
    return os.environ.get("REC_FEAST_PROFILE", "sqlite")


@dataclass(frozen=True)
class PostgresSettings:
    """Where the PostgreSQL online store and registry live; `from_env` reads `FEAST_POSTGRES_*`."""

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "feast"
    user: str = "postgres"
    password: str = ""  # empty: trust or peer authentication
    db_schema: str = "public"
    sslmode: str = "disable"  # a local server has no TLS; use `require` across a network

    @classmethod
    def from_env(cls, **overrides) -> PostgresSettings:
        env = os.environ
        values = dict(
            host=env.get("FEAST_POSTGRES_HOST", cls.host),
            port=int(env.get("FEAST_POSTGRES_PORT", cls.port)),
            database=env.get("FEAST_POSTGRES_DB", cls.database),
            user=env.get("FEAST_POSTGRES_USER", cls.user),
            password=env.get("FEAST_POSTGRES_PASSWORD", cls.password),
            db_schema=env.get("FEAST_POSTGRES_SCHEMA", cls.db_schema),
            sslmode=env.get("FEAST_POSTGRES_SSLMODE", cls.sslmode),
        )
        values.update(overrides)
        return cls(**values)

    def yaml_variables(self) -> dict[str, str]:
        """The `${FEAST_POSTGRES_*}` values substituted into `feature_store.postgres.yaml`."""
        return {
            "FEAST_POSTGRES_HOST": self.host,
            "FEAST_POSTGRES_PORT": str(self.port),
            "FEAST_POSTGRES_DB": self.database,
            "FEAST_POSTGRES_USER": self.user,
            "FEAST_POSTGRES_PASSWORD": self.password,
            "FEAST_POSTGRES_SCHEMA": self.db_schema,
            "FEAST_POSTGRES_SSLMODE": self.sslmode,
        }


_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _expand(text: str, variables: Mapping[str, str]) -> str:
    """`os.path.expandvars` (as the Feast CLI does), with `variables` taking precedence over the environment."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, os.environ.get(name, match.group(0)))

    return _VARIABLE.sub(value, text)


def feature_store_config(
    repo_path: str | Path | None = None,
    profile: str | None = None,
    data_dir: str | Path | None = None,
    postgres: PostgresSettings | None = None,
) -> RepoConfig:
    """The Feast `RepoConfig` of a profile, read from the repository's YAML file.

    `sqlite`: the online store and registry databases go under `data_dir` (default
    `default_data_dir()`). `postgres`: the connection comes from `postgres` (default
    `PostgresSettings.from_env()`).
    """
    from feast.repo_config import RepoConfig

    repo = Path(repo_path or default_repo_path()).resolve()
    profile = profile or default_profile()
    if profile not in PROFILES:
        raise ValueError(f"unknown Feast profile '{profile}': use one of {', '.join(PROFILES)}")
    yaml_path = repo / PROFILE_FILES[profile]
    variables = (postgres or PostgresSettings.from_env()).yaml_variables() if profile == "postgres" else {}
    raw = yaml.safe_load(_expand(yaml_path.read_text(), variables))
    if profile == "sqlite":
        directory = Path(data_dir or default_data_dir()).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        raw["online_store"]["path"] = str(directory / "online_store.db")
        raw["registry"]["path"] = f"sqlite:///{directory / 'registry.db'}"
    else:  # the same server as the online store, with the credentials URL-quoted
        online = raw["online_store"]
        raw["registry"]["path"] = (
            f"postgresql+psycopg://{quote(str(online['user']), safe='')}:"
            f"{quote(str(online['password']), safe='')}@{online['host']}:{online['port']}/"
            f"{quote(str(online['database']), safe='')}"
            + (f"?sslmode={online['sslmode']}" if online.get("sslmode") else "")
        )
    config = RepoConfig(**raw)
    config.repo_path = repo
    return config


def load_feature_store(
    repo_path: str | Path | None = None,
    profile: str | None = None,
    data_dir: str | Path | None = None,
    postgres: PostgresSettings | None = None,
) -> FeatureStore:
    """A Feast `FeatureStore` for a repository and profile (see `feature_store_config`)."""
    from feast import FeatureStore

    return FeatureStore(config=feature_store_config(repo_path, profile, data_dir, postgres))
