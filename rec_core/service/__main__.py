"""`python -m rec_core.service --root data/artifacts [--host 127.0.0.1] [--port 8000]`.

Loads the artifacts first, so a missing or broken root is reported before anything listens, and
refuses a non-loopback `--host` unless `REC_SERVICE_TOKEN` is set (exit status 2, with why).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rec_core.data.paths import default_artifact_root
from rec_core.service import (
    TOKEN_ENV,
    BindRefused,
    ServiceSettings,
    check_bind,
    load_service,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rec_core.service", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=default_artifact_root(),
                        help="artifact root of a materialization (default: $REC_ARTIFACT_ROOT, else data/artifacts)")
    parser.add_argument("--host", default="127.0.0.1", help=f"listen address; anything but loopback needs {TOKEN_ENV}")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--reload-interval", type=float, default=2.0,
                        help="seconds between checks for a newly published release (0: never reload)")
    parser.add_argument("--max-upload-mb", type=float, default=ServiceSettings.max_upload_bytes / 2**20,
                        help="largest image upload accepted, in MiB")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request (load tests)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = os.environ.get(TOKEN_ENV) or None
    try:
        check_bind(args.host, token)
    except BindRefused as exc:
        print(f"rec_core.service: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    settings = ServiceSettings(token=token, max_upload_bytes=int(args.max_upload_mb * 2**20))
    app = load_service(args.root, settings, args.reload_interval)
    uvicorn.run(app, host=args.host, port=args.port, access_log=not args.no_access_log, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
