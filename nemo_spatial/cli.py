"""One convention for how every entry point ends (train, sft, eval, reward, reward.serve, export, submit, report).

    def main(argv=None) -> int: ...            # parse with add_verbose_flag(parser); raise UserError on a mistake
    if __name__ == "__main__":
        sys.exit(run_main(main))

- A `UserError` (ConfigError included) is the user's to mend: one line `error: <message>` on stderr and exit
  status 2, the traceback only with `--verbose` (or NEMO_SPATIAL_VERBOSE=1), because a stack of library frames
  hides the one line that says what to change.
- KeyboardInterrupt: `interrupted` and status 130, as a shell reports it.
- Anything else is a bug or an environment failure: it propagates with its traceback (status 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from nemo_spatial.errors import UserError

VERBOSE_ENV = "NEMO_SPATIAL_VERBOSE"
USER_ERROR_STATUS = 2


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """`--verbose`: show third-party output and full tracebacks (also NEMO_SPATIAL_VERBOSE=1)."""
    parser.add_argument(
        "--verbose", action="store_true", help="show everything: third-party warnings and full tracebacks"
    )


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether `--verbose` is on the command line or NEMO_SPATIAL_VERBOSE is set (before argparse has run)."""
    args = sys.argv[1:] if argv is None else argv
    return "--verbose" in args or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call `main(argv)` and turn a UserError into `error: ...` + status 2 (traceback only when verbose)."""
    try:
        return main(argv)
    except UserError as error:
        if verbose_requested(argv):
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_STATUS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
