"""The recommendation service: a FastAPI app over `Recommender`, with the explorer page at `/`.

Run it with `python -m rec_core.service --root data/artifacts` (loopback, port 8000), or with
`uvicorn --factory rec_core.service:app_from_environment` (artifact root from `REC_ARTIFACT_ROOT`).
Any address other than loopback needs `REC_SERVICE_TOKEN` (see `rec_core.service.security`).
"""

from rec_core.data.paths import default_artifact_root
from rec_core.service.app import ServiceSettings, create_app
from rec_core.service.live import LiveRecommender
from rec_core.service.security import TOKEN_ENV, BindRefused, check_bind

__all__ = [
    "TOKEN_ENV",
    "BindRefused",
    "LiveRecommender",
    "ServiceSettings",
    "app_from_environment",
    "check_bind",
    "create_app",
    "load_service",
]


def load_service(root, settings: ServiceSettings | None = None, reload_interval_s: float = 2.0):
    """The app over the artifacts under `root`, read now (so a bad root fails before anything listens)."""
    from rec_core.serving import Recommender

    return create_app(LiveRecommender(Recommender.load(root), reload_interval_s), settings)


def app_from_environment():
    """For `uvicorn --factory`: root from `REC_ARTIFACT_ROOT` (default data/artifacts), token from `REC_SERVICE_TOKEN`."""
    import os

    token = os.environ.get(TOKEN_ENV) or None
    check_bind("127.0.0.1", token)  # validates the token; the bind address is uvicorn's, guarded per request
    return load_service(default_artifact_root(), ServiceSettings(token=token))
