"""Timing and memory helpers shared by the benchmarks."""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable


def int_options_parser(prog: str, options: dict[str, tuple[int, str | None]]) -> argparse.ArgumentParser:
    """A parser for a benchmark's integer options (sizes, counts, seed), each `flag: (default, help)`;
    the caller adds any other kind of option."""
    parser = argparse.ArgumentParser(prog=prog)
    for flag, (default, help_text) in options.items():
        parser.add_argument(flag, type=int, default=default, help=help_text)
    return parser


def timed_runs(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[index])


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
