"""Service benchmark: `python -m rec_core.bench service --n-items 100000 [--json PATH]`.

The catalog and vectors are `bench serving`'s (the synthetic generator at the requested size,
vectors from `synthetic_catalog`), written as an artifact root and published as a release.
Then, in one run:

1. in-process: one thread calls `Recommender.recommend` `--requests` times (filters on:
   available, not already seen, a price cap), timed per call; the service is not running yet;
2. the service (`python -m rec_core.service --workers N`, N = this machine's cores by default,
   access log off) on 127.0.0.1, driven by HTTP clients (httpcore, httpx's connection layer) in this process, one thread per
   connection, at each concurrency level (1, 4, 16): that many requests are kept in flight
   until `--requests` have been answered (see `drive`); latency is measured by the client, from
   sending a request to reading its whole response;
3. reload under load: at concurrency 16 a new release is published (the same vectors with a new
   index build, written and released by `rec_core.release.publish_release` in a subprocess)
   while requests keep coming; the load runs until the service reports the new release
   and `--requests` more were answered, then stops (or after `--reload-timeout` seconds).

The load generator and the server share the machine's cores, so service throughput is what is
left of them after the client's own work: `service_client_cpu_ms_per_request_c16` and
`service_server_cpu_ms_per_request_c16` (all worker processes together) show how the CPU time was
split. The ratio `service_vs_inprocess_ratio` is requests per second at concurrency 16 over the
in-process loop's (one thread; the service has `service_workers` processes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Self
from urllib.parse import quote, urlsplit

import httpcore
import httpx
import numpy as np
import psutil

from rec_core.bench.common import median, percentile
from rec_core.bench.serving import synthetic_catalog

REPO_ROOT = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rec_core.bench service")
    parser.add_argument("--n-items", type=int, default=100_000)
    parser.add_argument("--n-users", type=int, default=5_000)
    parser.add_argument("--interactions-per-user", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2_000, help="timed requests per concurrency level")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests before each level")
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels, comma separated")
    parser.add_argument("--reload-timeout", type=float, default=120.0, help="seconds the reload run may take at most")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="service processes (default: one per core, as it would be deployed)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def write_artifact_root(root: Path, args: argparse.Namespace) -> tuple[list[str], list[dict]]:
    """`bench serving`'s catalog and vectors as a published release under `root`; (user ids, filter specs)."""
    from rec_core.data.paths import ITEM_INDEX_DIR, table_file
    from rec_core.index import ItemIndex
    from rec_core.release import publish_release
    from rec_core.serving import vector_table
    from rec_core.storage import write_parquet

    dataset, item_vectors, user_vectors = synthetic_catalog(args)
    user_ids = dataset.users["user_id"].astype(str).tolist()
    for name in ("users", "items", "interactions"):
        write_parquet(getattr(dataset, name), root / table_file(name))
    write_parquet(vector_table("user_id", user_ids, user_vectors), root / table_file("user_embeddings"))
    ItemIndex.build(dataset.items["item_id"].tolist(), item_vectors, recall_queries=user_vectors).save(
        root / ITEM_INDEX_DIR
    )
    publish_release(root)
    price_cap = float(np.quantile(dataset.items["discounted_price"], 0.9))
    filters = [{"rule": "available"}, {"rule": "exclude_interacted"}, {"rule": "price_range", "max_price": price_cap}]
    return user_ids, filters


def publish_new_build(root: Path) -> str:
    """The served vectors again with a fresh index build id, released; returns the new release id."""
    from rec_core.index import ItemIndex
    from rec_core.release import ITEM_INDEX_DIR, publish_release

    root = Path(root)
    index = ItemIndex.load(root / ITEM_INDEX_DIR)
    report = dataclasses.replace(index.report, build_id=uuid.uuid4().hex)
    ItemIndex(index.item_ids, index.vectors, index.index, report, index.config).save(root / ITEM_INDEX_DIR)
    return publish_release(root)["release_id"]


def in_process(root: Path, users: list[str], filters: list[dict], k: int, requests: int, warmup: int) -> dict:
    from rec_core.serving import Recommender

    recommender = Recommender.load(root)
    for user_id in users[:warmup]:
        recommender.recommend(user_id, k, filters)
    latencies = []
    started = time.perf_counter()
    for user_id in users[:requests]:
        begin = time.perf_counter()
        recommender.recommend(user_id, k, filters)
        latencies.append(time.perf_counter() - begin)
    return {
        "inprocess_rps": requests / (time.perf_counter() - started),
        "inprocess_p50_ms": median(latencies) * 1e3,
        "inprocess_p99_ms": percentile(latencies, 99) * 1e3,
    }


class ServiceProcess:
    """`python -m rec_core.service` with `workers` processes on a free loopback port, stopped on exit."""

    def __init__(self, root: Path, log_path: Path, workers: int):
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rec_core.service",
                    "--root",
                    str(root),
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    "--reload-interval",
                    "2",
                    "--workers",
                    str(workers),
                ],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
            )

    def __enter__(self) -> Self:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the service exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the service did not answer /healthz within 300 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the server process and its workers."""
        parent = psutil.Process(self.process.pid)
        total = 0.0
        for process in (parent, *parent.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total


def _client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


TRANSPORT_ERRORS = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
)  # a request that got no answer


@dataclasses.dataclass
class LoadResult:
    latencies: list[float]
    errors: list[str]
    seconds: float
    releases: dict[str, int]  # release id -> answers it gave
    latest: dict[int, str] = dataclasses.field(default_factory=dict)  # connection -> release of its latest answer, live


def drive(
    url: str, paths: list[str], concurrency: int, count: int, keep_going: Callable[[LoadResult], bool] | None = None
) -> LoadResult:
    """`concurrency` threads, each with its own connection pool (one keep-alive connection), send requests
    until `count` were sent (and, when given, until `keep_going(result so far)` is False); a request
    starts as soon as one of them is free.

    The requests go through httpcore, the HTTP/1.1 engine under httpx, without httpx's request and
    response models on top: at concurrency 16 on the 2-core machine, `httpx.Client.send` cost 1.0 to
    1.7 ms of client CPU per request and httpcore 0.4 to 0.65 ms, and on a shared machine every
    millisecond the load generator spends is one the server lacks. Threads with synchronous
    connections rather than an async client, for the same reason (the async stack costs more per
    request). Requests are built before the clock starts, so the timed loop is sending and reading only.
    """
    timeout = {"connect": 60.0, "read": 60.0, "write": 60.0, "pool": 60.0}
    host = [(b"Host", urlsplit(url).netloc.encode())]  # HTTP/1.1 requires it; httpcore adds it only in request()
    requests = [
        httpcore.Request("GET", f"{url}{path}", headers=host, extensions={"timeout": timeout}) for path in paths
    ]
    result = LoadResult([], [], 0.0, {})
    tickets = itertools.count()  # next() is atomic under the GIL: each request is sent once
    lock = threading.Lock()

    def worker(connection: int):
        latencies, errors, releases = [], [], {}
        with httpcore.ConnectionPool(max_connections=1) as pool:
            while True:
                ticket = next(tickets)
                if ticket >= count and (keep_going is None or not keep_going(result)):
                    break
                begin = time.perf_counter()
                try:
                    response = pool.handle_request(requests[ticket % len(requests)])
                    try:
                        body = response.read()
                    finally:
                        response.close()
                except TRANSPORT_ERRORS as exc:
                    errors.append(repr(exc))
                    continue
                latencies.append(time.perf_counter() - begin)
                if response.status != 200:
                    errors.append(f"{response.status}: {body[:200]!r}")
                    continue
                release = json.loads(body)["release_id"]
                releases[release] = releases.get(release, 0) + 1
                result.latest[connection] = release
        with lock:
            result.latencies += latencies
            result.errors += errors
            for release, answers in releases.items():
                result.releases[release] = result.releases.get(release, 0) + answers

    threads = [threading.Thread(target=worker, args=(connection,)) for connection in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result


def run(argv: list[str]) -> dict[str, float]:
    args = _parse(argv)
    levels = [int(level) for level in args.levels.split(",")]
    results: dict[str, float] = {"service_n_items": float(args.n_items), "service_workers": float(args.workers)}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp) / "artifacts"
        print("writing and releasing the artifact root", file=sys.stderr, flush=True)
        user_ids, filters = write_artifact_root(root, args)
        rng = np.random.default_rng(args.seed)
        users = rng.choice(user_ids, args.requests + args.warmup).tolist()
        print("in-process recommend loop", file=sys.stderr, flush=True)
        results.update(in_process(root, users, filters, args.k, args.requests, args.warmup))
        query = httpx.QueryParams({"k": args.k, "filters": json.dumps(filters)})
        paths = [f"/recommendations/{quote(user, safe='')}?{query}" for user in users]  # ids percent-encoded
        with ServiceProcess(root, Path(tmp) / "service.log", args.workers) as service:
            for level in levels:
                print(f"service at concurrency {level}", file=sys.stderr, flush=True)
                drive(service.url, paths[args.requests :], level, args.warmup)
                client_cpu, server_cpu = _client_cpu_seconds(), service.cpu_seconds()
                load = drive(service.url, paths[: args.requests], level, args.requests)
                answered = len(load.latencies)
                results.update(
                    {
                        f"service_rps_c{level}": answered / load.seconds,
                        f"service_p50_ms_c{level}": median(load.latencies) * 1e3,
                        f"service_p99_ms_c{level}": percentile(load.latencies, 99) * 1e3,
                        f"service_errors_c{level}": float(len(load.errors)),
                        f"service_client_cpu_ms_per_request_c{level}": (_client_cpu_seconds() - client_cpu)
                        / answered
                        * 1e3,
                        f"service_server_cpu_ms_per_request_c{level}": (service.cpu_seconds() - server_cpu)
                        / answered
                        * 1e3,
                    }
                )
            if f"service_rps_c{max(levels)}" in results:
                results["service_vs_inprocess_ratio"] = (
                    results[f"service_rps_c{max(levels)}"] / results["inprocess_rps"]
                )
            results.update(_reload_under_load(service, root, paths, max(levels), args))
    return results


def _reload_under_load(
    service: ServiceProcess, root: Path, paths: list[str], concurrency: int, args: argparse.Namespace
) -> dict[str, float]:
    """Publishes a new release while `concurrency` requests are in flight; runs until it is served."""
    print(f"reload under load at concurrency {concurrency}", file=sys.stderr, flush=True)
    before = httpx.get(f"{service.url}/release").json()["release"]["release_id"]
    published: dict[str, str] = {}

    def publish():  # in its own process, so that its CPU work does not hold the load generator's GIL
        script = (
            "import sys; from rec_core.bench.service import publish_new_build; print(publish_new_build(sys.argv[1]))"
        )
        run = subprocess.run(
            [sys.executable, "-c", script, str(root)], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        if run.returncode == 0:
            published["release_id"] = run.stdout.strip().splitlines()[-1]
        else:
            published["error"] = run.stderr[-2000:]

    publisher = threading.Thread(target=publish, daemon=True)
    deadline = time.monotonic() + args.reload_timeout

    def served(progress: LoadResult) -> bool:
        """Every connection's latest answer came from the new release: each worker process that holds a
        connection has swapped it in (workers reload on their own, a poll of /release reaches just one)."""
        latest = list(progress.latest.values())
        return len(latest) == concurrency and set(latest) == {published.get("release_id")}

    def keep_going(progress: LoadResult) -> bool:
        return not served(progress) and time.monotonic() < deadline and "error" not in published

    publisher.start()
    load = drive(service.url, paths, concurrency, args.requests, keep_going)
    load_after = drive(service.url, paths, concurrency, args.requests)  # then a full round on the new one
    publisher.join(timeout=60)
    new = published.get("release_id")
    errors = load.errors + load_after.errors
    if "error" in published:
        print(f"reload under load: publishing failed: {published['error']}", file=sys.stderr)
    if errors:
        print(f"reload under load: {len(errors)} errors, e.g. {errors[:3]}", file=sys.stderr)
    return {
        "service_reload_errors": float(len(errors)),
        "service_reload_requests": float(len(load.latencies) + len(load_after.latencies)),
        "service_reload_swapped": float(served(load) and load_after.releases.get(new, 0) == len(load_after.latencies)),
        "service_reload_answers_old_release": float(load.releases.get(before, 0)),
        "service_reload_answers_new_release": float(load.releases.get(new, 0) + load_after.releases.get(new, 0)),
        "service_reload_p99_ms": percentile(load.latencies, 99) * 1e3 if load.latencies else float("nan"),
    }
