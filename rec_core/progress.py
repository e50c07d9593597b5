"""Progress of long loops as log lines: a count, a rate and an ETA, at most once per interval.

A step that runs for minutes (encoding 50,000 items, drawing their images, training, evaluating,
loading the feature store) must say how far it is, or a user cannot tell slow from stuck. The
library stays free of Dagster: its long loops take an optional `Progress`, and the Dagster
assets build one that logs through `context.log.info`, so the lines land in the run's event log.
Every line has one format:

    item_text_embeddings: 12,000/50,000 items (24.0%), 410.3 items/s, ETA 1m33s

and a finished loop ends with `..., done in 2m02s`. Lines come at most every `every_s` seconds
(default 15, or `$REC_PROGRESS_EVERY_S`: 0 logs every step, which tests use). On the command
line a `Progress(bar=True)` also drives a tqdm bar.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

PROGRESS_INTERVAL_ENV = "REC_PROGRESS_EVERY_S"
DEFAULT_INTERVAL_S = 15.0


def interval_from_env() -> float:
    """Seconds between progress lines: `$REC_PROGRESS_EVERY_S`, else 15."""
    raw = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise ValueError(f"{PROGRESS_INTERVAL_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def format_duration(seconds: float) -> str:
    """45s, 1m33s, 2h05m: precise enough to plan around, short enough to scan."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_rate(per_s: float, unit: str, per: str | None = None) -> str:
    """`410.3 items/s`, or per minute for slow loops (`per="min"` forces it, `per="s"` forbids it)."""
    if per == "min" or (per is None and per_s < 1):
        return f"{per_s * 60:,.2f} {unit}/min"
    return f"{per_s:,.1f} {unit}/s"


def progress_line(
    label: str,
    done: int,
    total: int | None,
    unit: str,
    elapsed_s: float,
    eta_s: float | None = None,
    finished: bool = False,
    per: str | None = None,
    note: str = "",
) -> str:
    """The one progress format: `label: done/total unit (pct), rate, ETA` (or `done in`), then an optional note."""
    count = f"{done:,}/{total:,} {unit} ({100 * done / total:.1f}%)" if total else f"{done:,} {unit}"
    parts = [count, format_rate(done / elapsed_s if elapsed_s > 0 else 0.0, unit, per)]
    if finished:
        parts.append(f"done in {format_duration(elapsed_s)}")
    elif eta_s is not None:
        parts.append(f"ETA {format_duration(eta_s)}")
    return f"{label}: {', '.join(parts)}" + (f"; {note}" if note else "")


class Progress:
    """Counts finished work of one loop and reports it through `log`, throttled to one line per `every_s`.

    `start(total)` begins (or restarts) the count, `advance(n)` adds finished units, `finish()` logs
    the closing line. Without `log` (and without `bar`) it only counts, so library code can always
    call it. `clock` is injectable for tests.
    """

    def __init__(
        self,
        label: str,
        log: Callable[[str], None] | None = None,
        *,
        unit: str = "items",
        every_s: float | None = None,
        bar: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label, self.log, self.unit, self.bar = label, log, unit, bar
        self.every_s = interval_from_env() if every_s is None else every_s
        self.clock = clock
        self.total: int | None = None
        self.done = 0
        self._started = self._last_line = clock()
        self._tqdm = None

    def stage(self, name: str, unit: str) -> Progress:
        """A reporter for one part of this step (`model_evaluation EASE`), with the same log and interval."""
        return Progress(
            f"{self.label} {name}", self.log, unit=unit, every_s=self.every_s, bar=self.bar, clock=self.clock
        )

    def start(self, total: int | None) -> Progress:
        self.total, self.done = total, 0
        self._started = self._last_line = self.clock()
        if self.bar:
            from tqdm.auto import tqdm

            self._close_bar()
            self._tqdm = tqdm(total=total, desc=self.label, unit=self.unit)
        return self

    def advance(self, count: int = 1, note: str = "") -> None:
        """Adds `count` finished units; logs a line when `every_s` has passed since the last one (and the
        work is not complete: `finish` says that)."""
        self.done += count
        if self._tqdm is not None:
            self._tqdm.update(count)
        now = self.clock()
        complete = self.total is not None and self.done >= self.total
        if self.log is not None and not complete and now - self._last_line >= self.every_s:
            self._last_line = now
            self.log(self.line(note))

    def finish(self, note: str = "") -> None:
        """Logs the closing line (when anything was done) and closes the bar."""
        self._close_bar()
        if self.log is not None and self.done:
            self.log(self.line(note, finished=True))

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self._started

    @property
    def rate(self) -> float:
        """Units per second since `start`."""
        elapsed = self.elapsed_s
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None without a total or before any unit is done."""
        if not self.total or not self.done:
            return None
        return max(0, self.total - self.done) / self.rate if self.rate > 0 else None

    def line(self, note: str = "", finished: bool = False) -> str:
        return progress_line(
            self.label, self.done, self.total, self.unit, self.elapsed_s, self.eta_s, finished, note=note
        )

    def _close_bar(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
