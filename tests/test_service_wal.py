"""Write-ahead log and DurableCollection durability (no HTTP): records, torn tails, snapshots, replay."""

from __future__ import annotations

import os

import numpy as np
import pytest

from simdex.apps.service import DurableCollection, IdConflictError, UnknownIdError, WriteAheadLog
from simdex.apps.service.wal import OP_DELETE, OP_UPSERT, encode_delete, encode_upsert
from simdex.index import ExactIndex
from simdex.index.io import CorruptFileError

DIM = 8


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def _state(col: DurableCollection) -> dict[int, tuple[bytes, tuple]]:
    ids = np.sort(col.index.ids)
    vecs = col.index.get_vectors(ids) if ids.size else np.zeros((0, DIM), np.float32)
    labels, data = col.collection.labels, col.collection.data
    return {int(i): (v.tobytes(), labels.get(int(i)), data.get(int(i))) for i, v in zip(ids, vecs)}


def test_records_round_trip(tmp_path):
    wal = WriteAheadLog(tmp_path)
    assert list(wal.replay()) == []
    x = _vecs(3)
    meta = [["a", {"k": 1}], [None, None], [7, None]]
    assert wal.append_group([encode_upsert(np.array([5, 6, 7]), x, meta), encode_delete(np.array([6]))]) == 2
    assert wal.append_group([encode_upsert(np.array([9]), x[:1], None)]) == 3
    wal.close()
    recs = list(WriteAheadLog(tmp_path).replay())
    assert [r.lsn for r in recs] == [1, 2, 3]
    assert recs[0].op == OP_UPSERT and recs[0].ids.tolist() == [5, 6, 7] and recs[0].meta == meta
    np.testing.assert_array_equal(recs[0].vectors, x)
    assert recs[1].op == OP_DELETE and recs[1].ids.tolist() == [6]
    assert recs[2].meta is None
    assert [r.lsn for r in WriteAheadLog(tmp_path).replay(after_lsn=2)] == [3]


def test_torn_tail_dropped_at_every_cut(tmp_path):
    """Cut the file at every byte inside the last record: that record (only) disappears."""
    src = tmp_path / "src"
    wal = WriteAheadLog(src)
    list(wal.replay())
    wal.append_group([encode_upsert(np.array([1]), _vecs(1), None)])
    size_one = wal.bytes_written
    wal.append_group([encode_upsert(np.array([2]), _vecs(1, 1), [["x", None]])])
    wal.close()
    (seg,) = [p for p in os.listdir(src) if p.startswith("wal-")]
    data = (src / seg).read_bytes()
    for cut in range(size_one, len(data)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg).write_bytes(data[:cut])
        w = WriteAheadLog(d)
        assert [r.lsn for r in w.replay()] == [1], cut
        assert os.path.getsize(d / seg) == size_one  # truncated to the last good record
        # appending continues with the next lsn after the repair
        assert w.append_group([encode_delete(np.array([1]))]) == 2
        w.close()
        assert [r.lsn for r in WriteAheadLog(d).replay()] == [1, 2]


def test_flipped_bit_in_last_record_is_dropped(tmp_path):
    wal = WriteAheadLog(tmp_path)
    list(wal.replay())
    wal.append_group([encode_upsert(np.array([1]), _vecs(1), None)])
    wal.append_group([encode_upsert(np.array([2]), _vecs(1), None)])
    wal.close()
    (seg,) = [p for p in os.listdir(tmp_path) if p.startswith("wal-")]
    data = bytearray((tmp_path / seg).read_bytes())
    data[-5] ^= 0x10
    (tmp_path / seg).write_bytes(bytes(data))
    assert [r.lsn for r in WriteAheadLog(tmp_path).replay()] == [1]


def test_damage_in_an_older_segment_raises(tmp_path):
    wal = WriteAheadLog(tmp_path)
    list(wal.replay())
    wal.append_group([encode_upsert(np.array([1]), _vecs(1), None)])
    wal.rotate(1)
    wal.append_group([encode_upsert(np.array([2]), _vecs(1), None)])
    wal.close()
    first = sorted(p for p in os.listdir(tmp_path) if p.startswith("wal-"))[0]
    data = bytearray((tmp_path / first).read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / first).write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="not the last segment"):
        list(WriteAheadLog(tmp_path).replay())


def test_collection_replays_and_snapshots(tmp_path):
    base = ExactIndex(DIM)
    base.add(_vecs(4, 9), [100, 101, 102, 103])
    col = DurableCollection.open(tmp_path / "data", base)
    x = _vecs(10)
    assert col.add(list(range(10)), x, labels=list("abcdefghij"), payloads=[{"i": i} for i in range(10)]) == 1
    with pytest.raises(IdConflictError, match="id 3 is already present"):
        col.add([3], x[:1])
    col.add([3], x[5:6], labels=[None], replace=True)
    with pytest.raises(UnknownIdError, match="id 55 is not in the index"):
        col.remove([1, 55])
    col.remove([1, 100])
    before = _state(col)
    assert col.lsn == 3
    col.close()

    fresh = ExactIndex(DIM)
    fresh.add(_vecs(4, 9), [100, 101, 102, 103])
    col = DurableCollection.open(tmp_path / "data", fresh)  # same base + the log = the same state
    assert _state(col) == before
    assert 3 not in col.collection.labels and 3 not in col.collection.data  # replaced without them
    assert col.collection.labels[2] == "c" and col.collection.data[2] == {"i": 2}
    col.close()
    with pytest.raises(FileNotFoundError, match="no snapshot"):
        DurableCollection.open(tmp_path / "data")


def test_collection_restart_from_log_and_snapshot(tmp_path):
    base_path = tmp_path / "base.simdex"
    base = ExactIndex(DIM)
    base.add(_vecs(2, 9), [100, 101])
    base.save(base_path)
    data = tmp_path / "data"
    col = DurableCollection.open(data, base_path)
    col.add([1, 2], _vecs(2), payloads=[{"a": 1}, None])
    col.remove([100])
    expected = _state(col)
    col.close()
    col = DurableCollection.open(data, base_path)
    assert _state(col) == expected and col.lsn == 2
    snap = col.snapshot()
    assert snap["lsn"] == 2 and col.wal_lag == 0
    col.add([3], _vecs(1, 3), labels=["z"])
    expected = _state(col)
    col.close()
    os.unlink(base_path)  # the data directory is self-contained after a snapshot
    col = DurableCollection.open(data)
    assert _state(col) == expected and col.lsn == 3 and col.snapshot_lsn == 2
    col.close()


def test_crash_between_snapshot_and_log_truncation(tmp_path):
    """A snapshot whose log was not yet truncated: replay skips what it holds (or reapplies
    it idempotently), and the state is exactly the acknowledged one."""
    data = tmp_path / "data"
    col = DurableCollection.open(data, ExactIndex(DIM))
    col.add([1, 2, 3], _vecs(3))
    col.remove([2])
    col.add([2], _vecs(1, 5), labels=["again"])
    saved_log = {p: (data / p).read_bytes() for p in os.listdir(data) if p.startswith("wal-")}
    col.snapshot()
    expected = _state(col)
    col.close()
    for p in os.listdir(data):  # put the pre-snapshot log back, as if truncation never happened
        if p.startswith("wal-"):
            os.unlink(data / p)
    for p, b in saved_log.items():
        (data / p).write_bytes(b)
    col = DurableCollection.open(data)
    assert _state(col) == expected and col.lsn == 3
    col.add([4], _vecs(1, 4))  # and the log continues with contiguous numbers
    col.close()
    col = DurableCollection.open(data)
    assert col.lsn == 4 and 4 in col.index
    col.close()


def test_idempotent_replay_from_an_older_snapshot(tmp_path):
    """Replaying records onto a state that already holds some of them gives the same state."""
    data = tmp_path / "data"
    col = DurableCollection.open(data, ExactIndex(DIM))
    col.add([1], _vecs(1))
    col.snapshot()  # snapshot at lsn 1
    snap_files = {p: (data / p).read_bytes() for p in os.listdir(data) if not p.startswith("wal-")}
    col.add([2], _vecs(1, 2))
    col.remove([1])
    col.add([1], _vecs(1, 3), replace=False)
    expected = _state(col)
    col.close()
    col = DurableCollection.open(data)
    assert _state(col) == expected
    col.close()
    assert snap_files  # CURRENT + snapshot files existed


def test_bad_writes_write_nothing(tmp_path):
    col = DurableCollection.open(tmp_path, ExactIndex(DIM))
    for args, err in [
        (([1], np.full((1, DIM), np.nan)), ValueError),
        (([1], _vecs(1)[:, :3]), ValueError),
        (([1, 1], _vecs(2)), ValueError),
        (([-1], _vecs(1)), ValueError),
        ((["a"], _vecs(1)), TypeError),
        (([1, 2], _vecs(1)), ValueError),
    ]:
        with pytest.raises(err):
            col.add(*args)
    with pytest.raises(TypeError):
        col.add([1], _vecs(1), payloads=[{"x": object()}])
    assert col.lsn == 0 and len(col) == 0 and col.wal_bytes <= 16
    col.close()


def test_group_commit_of_concurrent_writers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    col = DurableCollection.open(tmp_path, ExactIndex(DIM))
    x = _vecs(200)
    with ThreadPoolExecutor(8) as ex:
        lsns = list(ex.map(lambda i: col.add([i], x[i : i + 1]), range(200)))
    assert sorted(lsns) == list(range(1, 201))
    assert col.write_groups <= 200
    col.close()
    col = DurableCollection.open(tmp_path, ExactIndex(DIM))
    np.testing.assert_array_equal(col.index.get_vectors(np.arange(200)), x)
    col.close()


def test_snapshot_without_data_dir_round_trips(tmp_path):
    from simdex.apps.service.durable import load_collection
    from simdex.index.collection import Collection

    path = tmp_path / "served.simdex"
    index = ExactIndex(DIM)
    index.save(path)
    col = DurableCollection(load_collection(path)[0], snapshot_path=str(path))
    col.add([4, 5], _vecs(2), labels=["x", 9], payloads=[{"p": [1, 2]}, None])
    assert col.snapshot()["lsn"] == 1
    expected = _state(col)
    col.close()
    loaded, lsn = load_collection(path)  # a service snapshot now, with labels and payloads
    assert isinstance(loaded, Collection) and lsn == 1
    again = DurableCollection.open(tmp_path / "data", path)  # and a base for a data directory
    assert _state(again) == expected
    again.close()
