"""Headless Chromium for tests that check what a page shows once its scripts have run."""

import subprocess
from pathlib import Path


def rendered_dom(url: str, profile: Path, window_size: str, virtual_time_ms: int, *extra_flags: str) -> str:
    """The page's DOM after `virtual_time_ms` of virtual time: the browser fast-forwards the page's
    timers and fetches, so the test waits for the rendered page without sleeping."""
    command = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        *extra_flags,
        f"--user-data-dir={profile}",
        f"--window-size={window_size}",
        f"--virtual-time-budget={virtual_time_ms}",
        "--dump-dom",
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False).stdout
