"""`python launcher/submit.py --recipe conf/recipes/X.yaml --cluster conf/cluster/Y.yaml [key=value ...] [--dry-run]`.

Renders one sbatch script that places every component of a run (trainer ranks, vLLM servers, the reward
service) and submits it; the code is nemo_spatial/launcher/ (this file only makes the repository importable
when the package is not installed, e.g. on a login node with the repository checked out).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nemo_spatial.launcher.submit import cli

if __name__ == "__main__":
    cli()
