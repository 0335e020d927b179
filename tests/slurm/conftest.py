"""A real one-node SLURM on localhost for the tests of this folder (scripts/slurm_local.sh), stopped at the end.

The daemons (munged, slurmctld, slurmd) run from a private directory with their own SLURM_CONF and ports;
the session's finalizer stops them, so no daemon outlives the test session. Skipped with the reason where the
Debian packages are missing or the tests do not run as root (SlurmUser=root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm_local.sh"


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment (SLURM_CONF set) in which sbatch, squeue and scontrol talk to the local cluster."""
    missing = [tool for tool in ("slurmctld", "slurmd", "munged", "sbatch") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM runs as root (SlurmUser=root)")
    state = tmp_path_factory.mktemp("slurm")
    subprocess.run(["bash", str(SCRIPT), "start", str(state)], check=True, capture_output=True, timeout=60)
    try:
        yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], check=False, timeout=60)
