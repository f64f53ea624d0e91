"""Long fuzz run of every simdex loader (``make fuzz``), driven by hypothesis.

Each case is a valid file (an ExactIndex, an LSHIndex, a NearDuplicateFinder, a
SimilarityModel unless ``--no-model``) changed by either the structured mutator of
``tests/_filefuzz.py`` (seeded by hypothesis) or a hypothesis-generated JSON value
written over a random header field, with a valid checksum. A case passes when the
loader returns a usable object or raises ``CorruptFileError``; anything else (other
exception types, crashes are fatal to the run) is a *finding*, printed with the
file saved under ``--out``. The run never stops at a finding.

Usage:
    python bench/fuzz_loaders.py --cases 200000 [--seconds 3600] [--out fuzz_findings]
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import simdex  # noqa: E402
from _filefuzz import _paths, _set, container, forge, mutate, parse  # noqa: E402

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _valid_files(with_model: bool) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    exact = simdex.ExactIndex(6, metric="l2")
    exact.add(rng.standard_normal((7, 6)), ids=[3, 9, 1, 4, 8, 20, 2])
    lsh = simdex.LSHIndex(6, num_tables=3, hash_bits=4, num_probes=2)
    lsh.add(rng.standard_normal((9, 6)))
    files = {"exact": exact.to_bytes(), "lsh": lsh.to_bytes()}
    files["finder"] = container(
        "NearDuplicateFinder",
        {"format": 1, "batch_size": 8, "labels": '[[1, "a"], [3, 2.5]]'},
        {"index_file": np.frombuffer(files["exact"], np.uint8)},
    )
    if with_model:
        import keras

        from simdex.models import SimilarityModel

        inputs = keras.Input((4,))
        model = SimilarityModel(inputs, keras.layers.Dense(3)(inputs))
        model.index(np.eye(4, dtype=np.float32), y=np.arange(4))
        with tempfile.TemporaryDirectory() as tmp:
            model.save(os.path.join(tmp, "m.simdex"))
            files["model"] = Path(tmp, "m.simdex").read_bytes()
    return files


def _embed(x):
    return np.ones((len(x), 6), np.float32) / np.sqrt(6)


def _load(kind: str, data: bytes, tmp: Path) -> None:
    """Load ``data`` with the loader of ``kind`` and use the result."""
    path = tmp / f"{kind}.simdex"
    path.write_bytes(data)
    if kind in ("exact", "lsh"):
        for index in [simdex.load_index(path)] + (
            [simdex.load_index(path, mmap=True)] if kind == "exact" else []
        ):
            q = np.ones((2, index.dim), np.float32)
            index.search(q, 3)
            index.range_search(q, 0.5)
            index.verify()
            if not getattr(index, "is_mapped", False) and index._next_id < 2**63 - 1:
                index.add(np.ones((1, index.dim), np.float32))  # (2**63 - 1: a valid, exhausted counter)
    elif kind == "finder":
        from simdex.neardup import NearDuplicateFinder

        try:
            NearDuplicateFinder.load(path, embedder=_embed)
        except ValueError as e:
            if "dim" not in str(e) or isinstance(e, simdex.CorruptFileError):
                raise
    else:
        model = simdex.load_model(path)
        model.lookup(np.zeros((1, *model.input_shape[1:]), np.float32), k=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--out", default="fuzz_findings")
    ap.add_argument("--no-model", action="store_true", help="skip the TensorFlow model loader")
    args = ap.parse_args()
    faulthandler.enable()  # a crash prints the Python stack; last_case.simdex holds its input
    files = _valid_files(not args.no_model)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    stats = {"cases": 0, "loaded": 0, "refused": 0, "findings": 0}
    per_kind = {k: 0 for k in files}
    deadline = time.monotonic() + args.seconds
    tmp = Path(tempfile.mkdtemp(prefix="simdex-fuzz-"))

    chunk = 1000  # hypothesis runs of this many cases, until --cases or --seconds is reached

    @settings(max_examples=chunk, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data):
        kind = data.draw(st.sampled_from(sorted(files)))
        base = files[kind]
        if data.draw(st.booleans()):
            blob = mutate(base, np.random.default_rng(data.draw(st.integers(0, 2**63))))
        else:
            _, k, meta, payload = parse(base)
            paths = [p for p in _paths(meta) if p]
            path = data.draw(st.sampled_from(paths))
            try:
                _set(meta, path, data.draw(JSON))
            except (KeyError, IndexError, TypeError):
                pass
            blob = forge(k, meta, payload)
        stats["cases"] += 1
        per_kind[kind] += 1
        (out / "last_case.simdex").write_bytes(blob)
        try:
            _load(kind, blob, tmp)
            stats["loaded"] += 1
        except simdex.CorruptFileError:
            stats["refused"] += 1
        except Exception:
            stats["findings"] += 1
            name = hashlib.sha256(blob).hexdigest()[:16]
            (out / f"{kind}-{name}.simdex").write_bytes(blob)
            (out / f"{kind}-{name}.txt").write_text(traceback.format_exc())
            print(f"FINDING {kind} {name}: {traceback.format_exc().splitlines()[-1]}", flush=True)
        if stats["cases"] % 5000 == 0:
            print(f"{stats} {per_kind}", flush=True)

    t0 = time.monotonic()
    while stats["cases"] < args.cases and time.monotonic() < deadline:
        case()
    print(f"done in {time.monotonic() - t0:.0f} s: {stats}; per loader {per_kind}")
    (out / "last_case.simdex").unlink(missing_ok=True)
    return 1 if stats["findings"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
