"""Thread count from OMP_NUM_THREADS and threadpoolctl control (issue 14, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_CHILD = """
import numpy as np, simdex
print(simdex.get_num_threads())
index = simdex.ExactIndex(4)
index.add(np.eye(4))
index.search(np.ones(4), 2)
print(simdex.get_num_threads())
simdex.set_num_threads(2)
print(simdex.get_num_threads())
simdex.set_num_threads(0)
print(simdex.get_num_threads())
"""


def _run(code: str, **env: str) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=full)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_omp_num_threads_is_the_default():
    assert _run(_CHILD, OMP_NUM_THREADS="3") == ["3", "3", "2", "3"]
    assert _run(_CHILD, OMP_NUM_THREADS="5,2") == ["5", "5", "2", "5"]


def test_bad_omp_num_threads_is_ignored():
    cpus = str(len(os.sched_getaffinity(0)))
    assert _run(_CHILD, OMP_NUM_THREADS="zero")[0] == cpus
    assert _run(_CHILD, OMP_NUM_THREADS="0")[0] == cpus
    assert _run(_CHILD)[0] == cpus


def test_threadpoolctl_sees_and_limits_simdex():
    pytest.importorskip("threadpoolctl")
    code = """
import simdex, threadpoolctl
simdex.get_num_threads()  # loads the native core
info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "simdex"]
print(len(info), info[0]["num_threads"], info[0]["version"] == simdex.__version__)
with threadpoolctl.threadpool_limits(1, user_api="simdex"):
    print(simdex.get_num_threads())
print(simdex.get_num_threads())
with threadpoolctl.threadpool_limits(limits=2):
    print(simdex.get_num_threads())
"""
    assert _run(code, OMP_NUM_THREADS="4") == ["1", "4", "True", "1", "4", "2"]
