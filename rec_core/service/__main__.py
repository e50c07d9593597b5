"""`python -m rec_core.service --root data/artifacts [--host 127.0.0.1] [--port 8000] [--workers 1]`.

Loads the artifacts first, so a missing or broken root is reported before anything listens, and
refuses a non-loopback `--host` unless `REC_SERVICE_TOKEN` is set (exit status 2, with why).

Why `--workers`: one process answers on one core, whatever the machine has; the app's own work per
request (routing, validation, JSON, the search) holds the GIL. N workers are N uvicorn processes on
one listening socket, each with its own copy of the artifacts (memory grows N-fold) and its own
reload loop, so for a few seconds after a publish some may still answer from the previous release.
"""

from __future__ import annotations

import argparse
import copy
import logging.config
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from rec_core.data.paths import default_artifact_root
from rec_core.service import (
    DEFAULT_RELOAD_INTERVAL_S,
    TOKEN_ENV,
    BindRefused,
    ServiceSettings,
    check_bind,
    check_root,
    load_service,
    worker_environment,
)

WORKER_APP = "rec_core.service:app_from_environment"  # what each worker process imports and calls


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rec_core.service", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default=default_artifact_root(),
        help="artifact root of a materialization (default: $REC_ARTIFACT_ROOT, else data/artifacts)",
    )
    parser.add_argument("--host", default="127.0.0.1", help=f"listen address; anything but loopback needs {TOKEN_ENV}")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=DEFAULT_RELOAD_INTERVAL_S,
        help="seconds between checks for a newly published release (0: never reload)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=ServiceSettings.max_upload_bytes / 2**20,
        help="largest image upload accepted, in MiB",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request (load tests)")
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="server processes (one per core uses them all; each holds its own copy of the artifacts)",
    )
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _log_config() -> dict:
    """uvicorn's logging plus this package's messages (reloads, failed requests) with time and logger
    name; given to uvicorn, which applies it in every worker process too."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["rec_core"] = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    config["handlers"]["rec_core"] = {
        "class": "logging.StreamHandler",
        "formatter": "rec_core",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["rec_core"] = {"handlers": ["rec_core"], "level": "INFO", "propagate": False}
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = os.environ.get(TOKEN_ENV) or None
    try:
        check_bind(args.host, token)
    except BindRefused as exc:
        print(f"rec_core.service: {exc}", file=sys.stderr)
        return 2
    logging.config.dictConfig(_log_config())
    import uvicorn

    settings = ServiceSettings(token=token, max_upload_bytes=int(args.max_upload_mb * 2**20))
    options = {
        "host": args.host,
        "port": args.port,
        "access_log": not args.no_access_log,
        "timeout_graceful_shutdown": 10,
        "log_config": _log_config(),
    }
    if args.workers == 1:  # a broken root fails in load_service, before anything listens
        uvicorn.run(load_service(args.root, settings, args.reload_interval), **options)
        return 0
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as checker:
        checker.submit(check_root, args.root).result()  # raises the reason a broken root cannot be served
    os.environ.update(worker_environment(args.root, settings, args.reload_interval))
    uvicorn.run(WORKER_APP, factory=True, workers=args.workers, **options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
