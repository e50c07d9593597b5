"""The recommendation service: a FastAPI app over `Recommender`, with the explorer page at `/`.

Run it with `python -m rec_core.service --root data/artifacts` (loopback, port 8000; `--workers N`
for N server processes), or with `uvicorn --factory rec_core.service:app_from_environment`
(settings from the environment, see `app_from_environment`). Any address other than loopback
needs `REC_SERVICE_TOKEN` (see `rec_core.service.security`).
"""

import os
from pathlib import Path

from rec_core.data.paths import ARTIFACT_ROOT_ENV, default_artifact_root
from rec_core.service.app import ServiceSettings, create_app
from rec_core.service.live import LiveRecommender
from rec_core.service.security import TOKEN_ENV, BindRefused, check_bind

__all__ = [
    "DEFAULT_RELOAD_INTERVAL_S",
    "TOKEN_ENV",
    "BindRefused",
    "LiveRecommender",
    "ServiceSettings",
    "app_from_environment",
    "check_bind",
    "check_root",
    "create_app",
    "load_service",
    "worker_environment",
]

RELOAD_INTERVAL_ENV = "REC_SERVICE_RELOAD_INTERVAL_S"
MAX_UPLOAD_ENV = "REC_SERVICE_MAX_UPLOAD_BYTES"
DEFAULT_RELOAD_INTERVAL_S = 2.0


def load_service(root, settings: ServiceSettings | None = None, reload_interval_s: float = DEFAULT_RELOAD_INTERVAL_S):
    """The app over the artifacts under `root`, read now (so a bad root fails before anything listens)."""
    from rec_core.serving import Recommender

    return create_app(LiveRecommender(Recommender.load(root), reload_interval_s), settings)


def check_root(root) -> None:
    """Reads the artifacts under `root` as a service process would, then lets them go; `python -m
    rec_core.service --workers N` runs it in a throwaway process, so that a broken root is reported
    before anything listens without the parent keeping a copy of the artifacts in memory."""
    from rec_core.serving import Recommender

    LiveRecommender(Recommender.load(root), 0)


def app_from_environment():
    """For `uvicorn --factory`, and for each worker process of `python -m rec_core.service --workers N`:
    the root from `REC_ARTIFACT_ROOT` (default data/artifacts), the token from `REC_SERVICE_TOKEN`, the
    reload interval and upload limit from `REC_SERVICE_RELOAD_INTERVAL_S` and `REC_SERVICE_MAX_UPLOAD_BYTES`."""
    token = os.environ.get(TOKEN_ENV) or None
    check_bind("127.0.0.1", token)  # validates the token; the bind address is uvicorn's, guarded per request
    settings = ServiceSettings(
        token=token, max_upload_bytes=_from_environment(MAX_UPLOAD_ENV, int, ServiceSettings.max_upload_bytes)
    )
    interval = _from_environment(RELOAD_INTERVAL_ENV, float, DEFAULT_RELOAD_INTERVAL_S)
    return load_service(default_artifact_root(), settings, interval)


def worker_environment(root, settings: ServiceSettings, reload_interval_s: float) -> dict[str, str]:
    """The variables `app_from_environment` reads, for worker processes serving `root` with these settings
    (the token is not among them: workers inherit it from the environment it was read from)."""
    return {
        ARTIFACT_ROOT_ENV: str(Path(root).resolve()),
        RELOAD_INTERVAL_ENV: repr(float(reload_interval_s)),
        MAX_UPLOAD_ENV: str(settings.max_upload_bytes),
    }


def _from_environment(name: str, kind: type, default):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {kind.__name__}") from None
