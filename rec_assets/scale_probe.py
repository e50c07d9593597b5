"""One measured run of the whole graph: each step's seconds and peak RSS, the run's wall time and peak memory.

Run by `python -m rec_core.bench scale` (in a subprocess: the library never imports Dagster) as
`python -m rec_assets.scale_probe --run-config YAML --workdir DIR --json OUT`. It runs `scale_job`,
which is `main_job` plus one hook, through the `dagster job execute` command with the default
(multiprocess) executor, as a user runs the graph.

How memory is measured:
- Per step: the multiprocess executor runs each step in its own process, forked from a server
  that has preloaded the code location. The `step_peak_rss` success hook runs in that process
  after the step's outputs are stored, reads the process's own high-water mark
  (`getrusage(RUSAGE_SELF).ru_maxrss`, which the kernel keeps exactly and a forked child does not
  inherit from its parent's peak) and logs it to the run log. It changes no asset: the hook is
  attached only to `scale_job`. The figure includes the pages the step shares with the fork
  server (the imported libraries), so it is what `top` would show for that process at its peak.
- Whole run: a thread samples the `dagster` command's whole process tree (the command, which
  coordinates the run, the fork server and the step processes) every `SAMPLE_INTERVAL_S` and
  keeps the largest sum. It reports the sum of PSS (each resident page counted once, shared pages
  split among their sharers: the memory the run really takes) and the plain RSS sum (an upper
  bound that counts the shared libraries once per process). Sampling can miss a spike shorter
  than the interval; the per-step figures cannot.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import dagster as dg
import psutil
import yaml

import rec_assets
from rec_assets.bench_pipeline import (
    _keys_of_step,
    _latest_run_id,
    _step_seconds,
    bench_environment,
)
from rec_assets.jobs import main_job

SCALE_JOB = "scale_job"
PEAK_RSS_MESSAGE = "step peak RSS MB:"  # followed by the number; parsed back from the run log
SAMPLE_INTERVAL_S = 0.5
MB = 1024 * 1024


@dg.success_hook(name="step_peak_rss")
def step_peak_rss(context: dg.HookContext) -> None:
    """Logs the step process's peak RSS (Linux reports ru_maxrss in KiB)."""
    context.log.info(f"{PEAK_RSS_MESSAGE} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


scale_job = dg.define_asset_job(
    SCALE_JOB,
    selection=main_job.selection,
    tags=main_job.tags,
    hooks={step_peak_rss},
    description="main_job with each step's peak RSS logged (bench scale).",
)

defs = dg.Definitions.merge(rec_assets.defs, dg.Definitions(jobs=[scale_job]))


class TreeMemorySampler:
    """The largest total PSS and RSS of a process and its descendants, sampled on a thread."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_INTERVAL_S):
        self._root = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self.peak_pss_mb = 0.0
        self.peak_rss_sum_mb = 0.0
        self.processes_seen: set[int] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample_until_stopped(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval_s)

    def sample(self) -> None:
        try:
            processes = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:  # the run has ended
            return
        pss = rss = 0
        for process in processes:
            try:
                memory = process.memory_full_info()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue  # exited between listing and reading
            pss, rss = pss + memory.pss, rss + memory.rss
            self.processes_seen.add(process.pid)
        self.peak_pss_mb = max(self.peak_pss_mb, pss / MB)
        self.peak_rss_sum_mb = max(self.peak_rss_sum_mb, rss / MB)


def _step_logs(instance: dg.DagsterInstance, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
    """(each step's peak RSS as logged by `step_peak_rss`, the check name of each asset-check step)."""
    peaks, checks = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None and record.step_key and record.user_message.startswith(PEAK_RSS_MESSAGE):
            peaks[record.step_key] = float(record.user_message[len(PEAK_RSS_MESSAGE) :])
        elif event is not None and event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            checks[event.step_key] = event.event_specific_data.asset_check_key.name
    return peaks, checks


def measure_run(workdir: Path, run_config: dict) -> dict:
    """Runs `scale_job` with `run_config` in a fresh Dagster home under `workdir`.

    Returns {"total_s", "peak_pss_mb", "peak_rss_sum_mb", "processes", "steps": {name: {"s", "peak_rss_mb"}}},
    steps named by the assets they materialize (a multi-asset step under each of its keys) or, for
    an asset check, `check_<check name>`.
    """
    home, env = bench_environment(workdir)
    config_path = workdir / "run_config.yaml"
    config_path.write_text(yaml.safe_dump(run_config))
    command = [
        sys.executable,
        "-m",
        "dagster",
        "job",
        "execute",
        "-m",
        "rec_assets.scale_probe",
        "-j",
        SCALE_JOB,
        "-c",
        str(config_path),
    ]
    start = time.perf_counter()
    with (
        subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1]) as process,
        TreeMemorySampler(process.pid) as memory,
    ):
        returncode = process.wait()
    total_s = time.perf_counter() - start
    if returncode:
        raise RuntimeError(f"dagster job execute {SCALE_JOB} exited with {returncode} (run log under {home})")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = _latest_run_id(instance, SCALE_JOB)
        seconds = _step_seconds(instance, run_id)
        peaks, checks = _step_logs(instance, run_id)
    steps = {}
    for step, step_seconds in sorted(seconds.items()):
        for name in _keys_of_step(defs, step) or [f"check_{checks.get(step, step)}"]:
            steps[name] = {"s": step_seconds, "peak_rss_mb": peaks.get(step, float("nan"))}
    return {
        "total_s": total_s,
        "peak_pss_mb": memory.peak_pss_mb,
        "peak_rss_sum_mb": memory.peak_rss_sum_mb,
        "processes": len(memory.processes_seen),
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", type=Path, required=True, help="the run config (YAML or JSON)")
    parser.add_argument("--json", type=Path, required=True, help="where to write the measurements")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the Dagster home and artifacts here (default: a temporary directory, deleted afterwards)",
    )
    args = parser.parse_args(argv)
    run_config = yaml.safe_load(args.run_config.read_text())
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = measure_run(args.workdir, run_config)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = measure_run(Path(tmp), run_config)
    args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
