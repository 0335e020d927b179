"""Headless Chromium (Debian's `chromium` package) for the viewer tests: the DOM after rendering, a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("the viewer tests render pages in headless Chromium: apt-get install -y chromium")
    return found


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM as Chromium renders it (file:// URL, no server)."""
    done = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


def screenshot(page: Path, out: Path, profile: Path, size: tuple[int, int] = (1300, 1600)) -> Path:
    subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
         f"--screenshot={out}", page.resolve().as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return out
