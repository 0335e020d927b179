"""A spawned server exits when its parent is SIGKILLed (no orphaned vLLM holding memory or GPUs)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

CHILD = textwrap.dedent("""
    import os, sys, time
    from nemo_spatial.generation.watchdog import exit_when_parent_dies
    exit_when_parent_dies(os.getppid(), interval_s=0.1)
    print(os.getpid(), flush=True)
    time.sleep(120)
""")

PARENT = textwrap.dedent(f"""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], start_new_session=True, stdout=sys.stdout)
    time.sleep(120)
""")


def test_child_terminates_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    child = psutil.Process(child_pid)
    assert child.is_running()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 20
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_no_watchdog_without_the_variable(monkeypatch):
    from nemo_spatial.generation import watchdog

    monkeypatch.delenv(watchdog.PARENT_PID_ENV, raising=False)
    before = {t.name for t in __import__("threading").enumerate()}
    watchdog.watch_parent_from_env()
    assert "exit-with-parent" not in {t.name for t in __import__("threading").enumerate()} - before


HUNG_CHILD = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    from nemo_spatial.generation.watchdog import exit_when_parent_dies
    signal.signal(signal.SIGTERM, lambda *_: None)  # a graceful shutdown that never ends
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # its engine, same group
    exit_when_parent_dies(os.getppid(), interval_s=0.1, grace_s=1.0)
    print(os.getpid(), engine.pid, flush=True)
    time.sleep(120)
""")

HUNG_PARENT = textwrap.dedent(f"""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", {HUNG_CHILD!r}], start_new_session=True, stdout=sys.stdout)
    time.sleep(120)
""")


def test_a_server_whose_graceful_shutdown_hangs_is_killed_with_its_process_group():
    parent = subprocess.Popen([sys.executable, "-c", HUNG_PARENT], stdout=subprocess.PIPE, text=True)
    server, engine = (psutil.Process(int(pid)) for pid in parent.stdout.readline().split())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    _, alive = psutil.wait_procs([server, engine], timeout=30)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
