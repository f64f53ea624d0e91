"""Ctrl-C (SIGINT) stops a long native search between blocks with KeyboardInterrupt."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent(
    """
    import signal, sys, numpy as np, simdex
    # Python's own Ctrl-C handler, whatever this process inherited: a SIGINT that the
    # parent (the test runner, after tests that start servers or Ray) ignores is
    # ignored by its children too, and Python then installs no handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 64), dtype=np.float32)
    q = rng.standard_normal((200_000, 64), dtype=np.float32)   # ~5 TFLOP: minutes of work
    print("ready", flush=True)
    try:
        simdex.knn(q, x, k=10, metric="ip")
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(3)
    print("finished", flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_interrupts_long_search():
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, (out, err)
    assert "interrupted" in out
