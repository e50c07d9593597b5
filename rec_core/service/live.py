"""The `Recommender` a running service answers with, kept current by a background reload loop.

Why a loop rather than a reload per request: `Recommender.reload` reads a whole published version
(item table, index, embeddings) before it swaps one reference, which takes seconds on a large
catalog. A daemon thread polls every `interval_s` seconds instead, so no request ever waits for a
reload: requests keep reading the version they started on, and the next ones read the new one.
The user histories the explorer page shows are re-read from the swapped-in release's own tables,
and held behind a single reference too.

The loop thread shares the GIL with the event loop that answers requests. With Python's default
5 ms switch interval, each time a request's thread gives the GIL up (every socket call) it may
wait 5 ms to get it back while a reload runs, and a request needs several such round trips: p99
latency during a reload went to seconds. `start` shortens the interval to 0.5 ms for the process.

A version that cannot be read (half-published, from another model) is refused by `reload`; the
loop logs it, keeps serving the old version, shows the error at `GET /release`, and tries again
on the next tick.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import UTC, datetime

from rec_core.serving import Recommender
from rec_core.showcase import UserHistory

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005  # how long a thread may hold the GIL while another waits for it (default 0.005)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LiveRecommender:
    """A `Recommender` loaded from an artifact root, the users' histories beside it, and the reload loop."""

    def __init__(self, recommender: Recommender, interval_s: float = 2.0):
        if recommender.root is None:
            raise ValueError("the service needs a Recommender loaded from an artifact root (Recommender.load(root))")
        self.recommender = recommender
        self.interval_s = interval_s
        self.history = UserHistory.from_release(recommender.root, recommender.release)
        self.loaded_at = _now()
        self.reloads = 0
        self.last_reload_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def root(self):
        return self.recommender.root

    def reload_once(self) -> bool:
        """One poll: swap in a newly published version if there is one; True if it did."""
        started = time.perf_counter()
        try:
            if not self.recommender.reload():
                return False
            self.history = UserHistory.from_release(self.root, self.recommender.release)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the old version serving; the loop goes on
            self.last_reload_error = f"{_now()}: {type(exc).__name__}: {exc}"
            log.error("reload failed, still serving %s: %s", self._served(), self.last_reload_error)
            return False
        self.loaded_at, self.last_reload_error = _now(), None
        self.reloads += 1
        log.info("now serving %s (read in %.2f s)", self._served(), time.perf_counter() - started)
        return True

    def _served(self) -> str:
        release = self.recommender.release
        return f"release {release['release_id']}" if release else f"build {self.recommender.build_id}"

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._loop, name="recommender-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.reload_once()

    def status(self) -> dict:
        """What `GET /release` reports: the manifest of the release being served (None for a root without
        releases), its index build, when this service loaded it, and the last reload error."""
        return {
            "release": self.recommender.release,
            "build_id": self.recommender.build_id,
            "loaded_at": self.loaded_at,
            "reloads": self.reloads,
            "reload_interval_s": self.interval_s,
            "last_reload_error": self.last_reload_error,
        }
