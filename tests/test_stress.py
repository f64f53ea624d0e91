"""Concurrent add/replace/remove/reset/save/search checked against a serial model.

Writer threads change an index and a Python model of it under one lock, numbering
every write; searcher threads search without any lock and check each result against
the model states it could have seen (those between the last write published before the
search and the last write started after it): right ids, distances equal to a float64
oracle's, ascending, nothing missing. Saves are loaded back and compared exactly.

``make test`` runs a few seconds; ``make stress`` runs 60 s (SIMDEX_STRESS_SECONDS) and
prints the figures (writes, searches, checked results, saves, violations).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

import numpy as np
import pytest

from simdex import ExactIndex, LSHIndex, load_index

DURATION = float(os.environ.get("SIMDEX_STRESS_SECONDS", "3"))
DIM, K = 8, 5


def _dist(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "cosine":
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        xn = np.linalg.norm(x, axis=1, keepdims=True)
        sim = (q @ x.T) / np.maximum(qn * xn.T, 1e-300)
        return 1.0 - np.where((qn * xn.T) > 0, sim, 0.0)
    if metric == "ip":
        return -(q @ x.T)
    d2 = np.maximum(((q[:, None, :] - x[None]) ** 2).sum(axis=2), 0.0)
    return np.sqrt(d2) if metric == "l2" else d2


class Model:
    """Serial model: numbered states (ids, vectors) of one index."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.states: dict[int, dict[int, np.ndarray]] = {0: {}}
        self.started = 0  # writes begun (their state may already be visible)
        self.published = 0  # writes whose state is recorded
        self.active: dict[int, int] = {}  # searcher -> oldest version it may check

    def write(self, apply) -> None:
        with self.lock:
            cur = self.states[self.published]
            self.started += 1
            new = apply(dict(cur))
            self.states[self.started] = new
            self.published = self.started
            low = min(self.active.values(), default=self.published)
            for v in [v for v in self.states if v < low - 1]:
                del self.states[v]


def _matches(D, I, state: dict[int, np.ndarray], q: np.ndarray, metric: str) -> bool:
    n = len(state)
    ids = np.fromiter(state.keys(), dtype=np.int64, count=n)
    X = np.stack([state[i] for i in ids]) if n else np.empty((0, DIM), np.float32)
    ref = _dist(q, X, metric) if n else np.empty((len(q), 0))
    pos = {int(i): j for j, i in enumerate(ids)}
    for r in range(len(q)):
        m = min(K, n)
        if np.any(I[r, m:] != -1) or np.any(I[r, :m] < 0) or len(set(I[r, :m].tolist())) != m:
            return False
        if m == 0:
            continue
        if any(int(i) not in pos for i in I[r, :m]):
            return False
        scale = max(1.0, float(np.abs(ref[r]).max()))
        tol = 1e-4 * scale
        want = np.sort(ref[r])[:m]
        got = D[r, :m].astype(np.float64)
        if np.any(np.diff(got) < 0) or np.any(np.abs(got - want) > tol):
            return False
        true = ref[r, [pos[int(i)] for i in I[r, :m]]]
        if np.any(np.abs(true - got) > tol):
            return False
    return True


def _run(make_index, metric: str, seconds: float, seed: int) -> dict[str, int]:
    index = make_index()
    model = Model()
    stop = threading.Event()
    stats = {"writes": 0, "searches": 0, "checked": 0, "saves": 0, "violations": 0}
    stats_lock = threading.Lock()
    errors: list[str] = []
    tmp = tempfile.mkdtemp(prefix="simdex-stress-")

    def bump(key: str, n: int = 1) -> None:
        with stats_lock:
            stats[key] += n

    def writer(wid: int) -> None:
        rng = np.random.default_rng(seed * 100 + wid)
        path = os.path.join(tmp, f"w{wid}.simdex")
        try:
            while not stop.is_set():
                op = rng.random()

                def apply(state: dict[int, np.ndarray], op=op) -> dict[int, np.ndarray]:
                    size = len(state)
                    if op < 0.01:
                        index.reset()
                        return {}
                    if op < 0.03:
                        index.save(path)
                        back = load_index(path)
                        got = dict(zip(back.ids.tolist(), back.get_vectors(back.ids))) if len(back) else {}
                        if got.keys() != state.keys() or any(
                            not np.array_equal(got[i], state[i]) for i in state
                        ):
                            errors.append("a saved index differs from the model")
                        bump("saves")
                        return state
                    if (op < 0.45 and size > 0) or size > 400:
                        present = np.fromiter(state.keys(), dtype=np.int64)
                        ids = rng.choice(
                            present, size=min(len(present), int(rng.integers(1, 9))), replace=False
                        )
                        if rng.random() < 0.5:  # remove
                            index.remove(ids)
                            for i in ids.tolist():
                                del state[i]
                        else:  # replace
                            x = rng.standard_normal((len(ids), DIM)).astype(np.float32)
                            index.add(x, ids=ids, replace=True)
                            for i, v in zip(ids.tolist(), x):
                                state[i] = v
                        return state
                    x = rng.standard_normal((int(rng.integers(1, 9)), DIM)).astype(np.float32)
                    if rng.random() < 0.3:
                        x[0] = x[-1]  # duplicates: ties
                    new_ids = index.add(x)
                    for i, v in zip(new_ids.tolist(), x):
                        state[i] = v
                    return state

                model.write(apply)
                bump("writes")
        except Exception as e:  # noqa: BLE001 - recorded as a violation
            errors.append(f"writer: {e!r}")

    def searcher(sid: int) -> None:
        rng = np.random.default_rng(seed * 100 + 50 + sid)
        try:
            while not stop.is_set():
                q = rng.standard_normal((int(rng.integers(1, 6)), DIM)).astype(np.float32)
                with model.lock:
                    s0 = model.published
                    model.active[sid] = s0
                D, I = index.search(q, k=K)
                s1 = model.started
                deadline = time.monotonic() + 10
                while model.published < s1 and time.monotonic() < deadline:
                    time.sleep(0.0005)
                with model.lock:
                    cands = [model.states[v] for v in range(s0, s1 + 1) if v in model.states]
                ok = any(_matches(D, I, st, q, metric) for st in cands)
                with model.lock:
                    model.active.pop(sid, None)
                bump("searches")
                bump("checked", len(q))
                if not ok:
                    bump("violations")
                    errors.append(f"search result matches none of versions {s0}..{s1}: {I.tolist()}")
        except Exception as e:  # noqa: BLE001 - recorded as a violation
            errors.append(f"searcher: {e!r}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    threads += [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a stress thread hung"
    stats["violations"] += len([e for e in errors if not e.startswith("search result")])
    return stats | {"errors": errors}  # type: ignore[operator]


KINDS = {
    "exact-cosine": (lambda: ExactIndex(DIM, metric="cosine"), "cosine"),
    "exact-l2": (lambda: ExactIndex(DIM, metric="l2", fp16_prefilter=False), "l2"),
    # 2 tables x 4 bits probed exhaustively with no int8 pre-filter: exact results.
    "lsh-ip": (lambda: LSHIndex(DIM, num_tables=2, hash_bits=4, num_probes=16, refine=0, metric="ip"), "ip"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_stress_against_serial_model(kind):
    make, metric = KINDS[kind]
    seconds = DURATION / len(KINDS)
    stats = _run(make, metric, seconds, seed=sorted(KINDS).index(kind))
    errors = stats.pop("errors")
    print(
        f"\nstress {kind}: {seconds:.0f} s, {stats['writes']} writes, {stats['searches']} searches, "
        f"{stats['checked']} results checked, {stats['saves']} saves verified, "
        f"{stats['violations']} violations"
    )
    assert stats["violations"] == 0, errors[:5]
    assert stats["searches"] > 0 and stats["writes"] > 0
