"""Helpers for tests that start real server processes."""

import contextlib
import os
import signal
import subprocess


def stop_process_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM the process's group, then SIGKILL it if it has not exited within `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_process_group(command: list[str], cwd, env: dict, log) -> subprocess.Popen:
    """`command` in a session of its own, writing stdout and stderr to the open file `log`, so that
    `stop_process_group` stops it with every child it starts."""
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
