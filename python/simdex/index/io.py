"""Versioned, checksummed, atomically written container files.

Layout of a simdex file (all integers little-endian)::

    magic      8 bytes   b"SIMDEX\\x00\\x01"
    version    uint32    format version (FORMAT_VERSION)
    kind_len   uint32    length of the kind string
    kind       bytes     UTF-8 name of what is stored ("ExactIndex", "LSHIndex", ...)
    meta_len   uint64    length of the JSON metadata
    meta       bytes     UTF-8 JSON: {"params": {...}, "arrays": [{name, dtype, shape, offset, nbytes}]}
    payload    bytes     the arrays' raw C-order bytes at the offsets given in meta, in order,
                         each on a 64-byte boundary of the file (zero padding; the
                         metadata is padded with spaces so the payload starts aligned)
    sha256     32 bytes  digest of everything before it

Writes go to a temporary file next to the target (named after it and the writing
process), are fsync'ed and renamed over the target, so a crash or a full disk never
destroys the previous file; the next save of the same target removes the temporary
files of saves whose process died. A new file gets the mode the umask gives
(``0o666 & ~umask``), an existing one keeps its mode, and a symlink keeps pointing at
the file it names, which is the one replaced.

Reads treat the file as hostile: only regular files are opened (a FIFO or
``/dev/zero`` is refused without being read), every header field is parsed and
bound-checked against the file size before anything proportional to a claimed size
is allocated, and every failure is a :class:`CorruptFileError` (a ``ValueError``)
whose ``__cause__`` is the underlying error, if any.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import mmap as _mmap
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import IO, Any, Union

import numpy as np

MAGIC = b"SIMDEX\x00\x01"
FORMAT_VERSION = 1
_DIGEST = 32
_ALLOWED_DTYPES = {"float32", "float64", "int64", "uint64", "int32", "uint32", "uint8", "bool"}
_MAX_NDIM = 8
_KIND_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")
_TMP_SUFFIX = ".simdex-tmp"
_ALIGN = 64  # payload and arrays start on 64-byte boundaries (padding is zeros)

PathLike = Union[str, "os.PathLike[str]"]
Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]


class CorruptFileError(ValueError):
    """A file is truncated, corrupted, of a newer format, or not a simdex file."""


# --------------------------------------------------------------------------- writing
def _umask() -> int:
    try:  # Linux >= 4.7: read it without changing it (os.umask is process-wide and racy)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_ACTIVE: set[str] = set()  # temporary paths this process is writing right now
_ACTIVE_LOCK = threading.Lock()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # exists (another user's), or a nonsense pid we leave alone
    return True


def _tmp_prefix(target: str) -> str:
    return "." + os.path.basename(target)[:120] + "."


def remove_stale_temps(target: str) -> int:
    """Remove temporary files/directories left by killed saves of ``target``.

    Only entries named like this module's temporaries *for this target* whose
    writing process no longer exists are removed (a concurrent save by a live
    process keeps its file). Returns how many were removed.
    """
    directory = os.path.dirname(os.path.abspath(target))
    prefix = _tmp_prefix(target)
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not (
            name.startswith(prefix) and (name.endswith(_TMP_SUFFIX) or name.endswith(_TMP_SUFFIX + "dir"))
        ):
            continue
        pid_part = name[len(prefix) :].split("-", 1)[0]
        if not pid_part.isdigit():
            continue
        full = os.path.join(directory, name)
        with _ACTIVE_LOCK:
            if full in _ACTIVE:
                continue
        if _pid_alive(int(pid_part)) and int(pid_part) != os.getpid():
            continue
        with contextlib.suppress(OSError):
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
            removed += 1
    return removed


def _resolve_target(path: PathLike) -> str:
    path = os.fspath(path)
    if os.path.islink(path):
        return os.path.realpath(path)  # replace the file the link names, keep the link
    return path


@contextlib.contextmanager
def temp_dir_for(path: PathLike) -> Iterator[str]:
    """A private temporary directory next to ``path``, removed afterwards.

    Named after ``path`` and this process, so that a later save of the same target
    removes it if this process is killed before cleaning up.
    """
    target = _resolve_target(path)
    directory = os.path.dirname(os.path.abspath(target))
    remove_stale_temps(target)
    tmp = tempfile.mkdtemp(
        prefix=f"{_tmp_prefix(target)}{os.getpid()}-", suffix=_TMP_SUFFIX + "dir", dir=directory
    )
    with _ACTIVE_LOCK:
        _ACTIVE.add(tmp)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp)


@contextlib.contextmanager
def atomic_writer(path: PathLike) -> Iterator[IO[bytes]]:
    """Open a binary file that replaces ``path`` only if the block succeeds.

    The data goes to a temporary file next to ``path``; on success it is
    flushed, fsync'ed, given the target's mode (or ``0o666 & ~umask`` for a new
    file) and renamed over ``path``; a symlink at ``path`` is followed, so the file
    it names is replaced and the link survives. On any exception the temporary file
    is removed and ``path`` is left exactly as it was. Temporaries of earlier saves
    of ``path`` whose process died are removed first.

    Args:
        path: Destination file.

    Yields:
        A writable binary file object.
    """
    target = _resolve_target(path)
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory does not exist: {directory!r}")
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{_tmp_prefix(target)}{os.getpid()}-", suffix=_TMP_SUFFIX, dir=directory
    )
    with _ACTIVE_LOCK:
        _ACTIVE.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp)
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _is_writable_file(obj: Any) -> bool:
    return hasattr(obj, "write") and not isinstance(obj, (str, bytes, os.PathLike))


def write_container(
    target: PathLike | IO[bytes],
    kind: str,
    params: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
) -> None:
    """Write ``params`` (JSON-serialisable) and ``arrays`` to ``target``.

    Args:
        target: A path (written atomically, see :func:`atomic_writer`) or a binary
            file object opened for writing (written from its current position; not
            atomic, and not closed).
        kind: What is stored (e.g. ``"ExactIndex"``).
        params: JSON-serialisable parameters (finite numbers only).
        arrays: Named arrays of the dtypes in ``_ALLOWED_DTYPES``.
    """
    specs = []
    offset = 0
    prepared = []
    chunks: list[Any] = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name not in _ALLOWED_DTYPES:
            raise TypeError(f"array {name!r} has unsupported dtype {arr.dtype}")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        pad = -offset % _ALIGN  # every array starts on a 64-byte boundary (memory maps)
        if pad:
            chunks.append(bytes(pad))
            offset += pad
        specs.append(
            {
                "name": name,
                "dtype": arr.dtype.name,
                "shape": list(arr.shape),
                "offset": offset,
                "nbytes": arr.nbytes,
            }
        )
        offset += arr.nbytes
        prepared.append(arr)
        chunks.append(arr.reshape(-1).view(np.uint8).data)
    meta = json.dumps({"params": dict(params), "arrays": specs}, sort_keys=True, allow_nan=False).encode(
        "utf-8"
    )
    kind_b = kind.encode("utf-8")
    fixed = len(MAGIC) + 8 + len(kind_b) + 8
    meta += b" " * (-(fixed + len(meta)) % _ALIGN)  # the payload starts 64-byte aligned
    header = (
        MAGIC + struct.pack("<II", FORMAT_VERSION, len(kind_b)) + kind_b + struct.pack("<Q", len(meta)) + meta
    )

    def emit(f: IO[bytes]) -> None:
        digest = hashlib.sha256()
        for chunk in (header, *chunks):
            digest.update(chunk)
            f.write(chunk)
        f.write(digest.digest())

    if _is_writable_file(target):
        emit(target)  # type: ignore[arg-type]
    else:
        with atomic_writer(target) as f:  # type: ignore[arg-type]
            emit(f)


def container_bytes(kind: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes :func:`write_container` would write."""
    buf = io.BytesIO()
    write_container(buf, kind, params, arrays)
    return buf.getvalue()


# --------------------------------------------------------------------------- reading
class Container:
    """A parsed container: ``kind``, ``params``, ``arrays`` (and the buffer behind them).

    With ``verified=False`` (memory-mapped reads) the checksum has not been checked
    yet: call :meth:`verify`.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        params: dict[str, Any],
        arrays: dict[str, np.ndarray],
        buf: Any,
        verified: bool,
    ) -> None:
        self.name, self.kind, self.params, self.arrays = name, kind, params, arrays
        self._buf = buf
        self.verified = verified

    def verify(self) -> None:
        """Check the SHA-256 of the whole file (reads every byte)."""
        if not self.verified:
            _check_digest(self._buf, self.name)
            self.verified = True


def _check_digest(buf: Any, name: str) -> None:
    view = memoryview(buf)
    if hashlib.sha256(view[:-_DIGEST]).digest() != bytes(view[-_DIGEST:]):
        raise CorruptFileError(f"{name!r} is corrupted or truncated (checksum mismatch)")


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-finite number {token} in the header")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"number {token[:20]} out of range in the header")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r} in the header")
        out[key] = value
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_container(buf: Any, name: str = "<bytes>", *, verify: bool = True, copy: bool = True) -> Container:
    """Parse and validate the container in ``buf`` (bytes-like, or an mmap).

    Args:
        buf: The whole file.
        name: For error messages.
        verify: Check the checksum now (else :meth:`Container.verify` does later).
        copy: Arrays are copies (True) or read-only views into ``buf`` (False).

    Raises:
        CorruptFileError: anything wrong, with the cause chained.
    """
    try:
        return _parse(buf, name, verify, copy)
    except CorruptFileError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        struct.error,
        UnicodeDecodeError,
        RecursionError,
        OverflowError,
        MemoryError,
    ) as e:
        raise CorruptFileError(f"{name!r} has a malformed header: {type(e).__name__}: {str(e)[:200]}") from e


def _parse(buf: Any, name: str, verify: bool, copy: bool) -> Container:
    view = memoryview(buf).cast("B")
    size = len(view)
    min_size = len(MAGIC) + 8 + 8 + _DIGEST
    if size < min_size or bytes(view[: len(MAGIC)]) != MAGIC:
        raise CorruptFileError(f"{name!r} is not a simdex file (bad magic or too short: {size} bytes)")
    if verify:
        _check_digest(view, name)
    end = size - _DIGEST  # the body ends here
    pos = len(MAGIC)
    version, kind_len = struct.unpack_from("<II", view, pos)
    pos += 8
    if version > FORMAT_VERSION:
        raise CorruptFileError(
            f"{name!r} uses format version {version}; this simdex reads up to "
            f"{FORMAT_VERSION}; upgrade simdex"
        )
    if version < 1:
        raise CorruptFileError(f"{name!r} has format version {version}, which does not exist")
    if kind_len > min(64, end - pos - 8):
        raise CorruptFileError(f"{name!r} claims a {kind_len}-byte kind name (file is {size} bytes)")
    kind = bytes(view[pos : pos + kind_len]).decode("utf-8")
    if not _KIND_RE.fullmatch(kind):
        raise CorruptFileError(f"{name!r} has an invalid kind {kind[:40]!r}")
    pos += kind_len
    (meta_len,) = struct.unpack_from("<Q", view, pos)
    pos += 8
    if meta_len > end - pos:
        raise CorruptFileError(f"{name!r} claims {meta_len} bytes of metadata but only {end - pos} remain")
    meta = json.loads(
        bytes(view[pos : pos + meta_len]).decode("utf-8"),
        parse_constant=_reject_constant,
        parse_float=_finite_float,
        object_pairs_hook=_no_duplicates,
    )
    pos += meta_len
    if not isinstance(meta, dict) or set(meta) != {"params", "arrays"}:
        raise CorruptFileError(f"{name!r}: the header must hold exactly 'params' and 'arrays'")
    params, specs = meta["params"], meta["arrays"]
    if not isinstance(params, dict) or not isinstance(specs, list):
        raise CorruptFileError(f"{name!r}: 'params' must be a mapping and 'arrays' a list")
    payload_len = end - pos
    arrays: dict[str, np.ndarray] = {}
    expected_offset = 0
    for spec in specs:
        if not isinstance(spec, dict) or set(spec) != {"name", "dtype", "shape", "offset", "nbytes"}:
            raise CorruptFileError(f"{name!r}: malformed array entry")
        aname, dtype_name, shape = spec["name"], spec["dtype"], spec["shape"]
        offset, nbytes = spec["offset"], spec["nbytes"]
        if not isinstance(aname, str) or not aname or len(aname) > 64 or aname in arrays:
            raise CorruptFileError(f"{name!r}: bad or repeated array name {str(aname)[:40]!r}")
        if not isinstance(dtype_name, str) or dtype_name not in _ALLOWED_DTYPES:
            raise CorruptFileError(
                f"{name!r}: array {aname!r} has unsupported dtype {str(dtype_name)[:20]!r}"
            )
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(_is_int(s) and s >= 0 for s in shape)
        ):
            raise CorruptFileError(f"{name!r}: array {aname!r} has an invalid shape {str(shape)[:60]}")
        if not _is_int(offset) or not _is_int(nbytes):
            raise CorruptFileError(f"{name!r}: array {aname!r} has a non-integer offset or size")
        dtype = np.dtype(dtype_name).newbyteorder("<")
        count = math.prod(shape)  # exact Python integers: no overflow
        if nbytes != count * dtype.itemsize:
            raise CorruptFileError(f"{name!r}: array {aname!r} of shape {shape} cannot hold {nbytes} bytes")
        if not expected_offset <= offset < expected_offset + _ALIGN or offset + nbytes > payload_len:
            raise CorruptFileError(
                f"{name!r}: array {aname!r} at [{offset}, {offset + nbytes}) overlaps another array, "
                f"leaves a gap or runs past the payload ({payload_len} bytes)"
            )
        expected_offset = offset + nbytes
        arr = np.frombuffer(view, dtype=dtype, count=count, offset=pos + offset).reshape(shape)
        arrays[aname] = arr.copy() if copy else arr
    if expected_offset != payload_len:
        raise CorruptFileError(f"{name!r}: {payload_len - expected_offset} payload bytes belong to no array")
    return Container(name, kind, params, arrays, view, verify)


def _open_regular(path: str) -> tuple[int, int]:
    """Open ``path`` read-only if it is a regular file: (fd, size). Never blocks."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path!r}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(f"{path!r} is not a regular file (a directory, device, FIFO or socket)")
    fd = os.open(path, flags)  # O_NONBLOCK: a FIFO swapped in after the stat cannot block us
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptFileError(f"{path!r} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _read_all(fd: int, size: int, name: str) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise CorruptFileError(f"{name!r} shrank while being read")
        got += n
    return buf


def source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", f"<{type(source).__name__}>"))


def load_container(source: Source, *, mmap: bool = False) -> Container:
    """Read and validate a container from a path, a binary file object or bytes.

    Args:
        source: A path, a binary file object open for reading (read from its current
            position to the end), or bytes-like.
        mmap: Map the file read-only instead of reading it (paths only): arrays are
            read-only views into the map and the checksum is checked only by
            :meth:`Container.verify`.

    Raises:
        FileNotFoundError: no such path.
        CorruptFileError: not a regular file, truncated, corrupted, not a simdex file.
    """
    name = source_name(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return parse_container(source, name)
    if isinstance(source, (str, os.PathLike)):
        fd, size = _open_regular(os.fspath(source))
        try:
            if mmap and size > 0:
                mapped = _mmap.mmap(fd, size, access=_mmap.ACCESS_READ)
                return parse_container(mapped, os.path.basename(name), verify=False, copy=False)
            buf = _read_all(fd, size, name)
        finally:
            os.close(fd)
        return parse_container(buf, os.path.basename(name), copy=False)
    if hasattr(source, "read"):
        if mmap:
            raise ValueError("mmap=True needs a path, not a file object")
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(
                f"the file object must be opened in binary mode (read() gave {type(data).__name__})"
            )
        return parse_container(data, name, copy=False)
    raise TypeError(f"expected a path, a binary file object or bytes, got {type(source).__name__}")


def read_container(source: Source) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_container`: ``(kind, params, arrays)``.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        CorruptFileError: the file is truncated, corrupted, not regular or not a simdex file.
    """
    c = load_container(source)
    return c.kind, c.params, c.arrays


def pack_container(kind: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes :func:`write_container` would write (to nest a container inside another
    file); the same as :func:`container_bytes`."""
    return container_bytes(kind, params, arrays)


def unpack_container(
    data: bytes | bytearray | memoryview, name: str = "container"
) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Parse and validate container bytes (:func:`pack_container`): ``(kind, params, arrays)``.

    The same checks as :func:`load_container`; ``name`` appears in error messages.

    Raises:
        CorruptFileError: truncated, corrupted or not a simdex container.
    """
    c = parse_container(data, name)
    return c.kind, c.params, c.arrays


# --------------------------------------------------------------------------- field checks
_MISSING = object()


def field_int(params: Mapping[str, Any], key: str, lo: int, hi: int, default: Any = _MISSING) -> int:
    """``params[key]`` as an int in [lo, hi], else :class:`CorruptFileError`."""
    value = params.get(key, default)
    if value is _MISSING:
        raise CorruptFileError(f"missing field {key!r}")
    if not _is_int(value) or not lo <= value <= hi:
        raise CorruptFileError(f"field {key!r} must be an integer in [{lo}, {hi}], got {str(value)[:40]}")
    return value


def field_bool(params: Mapping[str, Any], key: str, default: Any = _MISSING) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise CorruptFileError(f"field {key!r} must be true or false, got {str(value)[:40]}")
    return value


def field_str(params: Mapping[str, Any], key: str, choices: Any = None, default: Any = _MISSING) -> str:
    value = params.get(key, default)
    if not isinstance(value, str) or (choices is not None and value not in choices):
        want = f" (one of {sorted(choices)})" if choices is not None else ""
        raise CorruptFileError(f"field {key!r} must be a string{want}, got {str(value)[:40]!r}")
    return value


def field_array(
    arrays: Mapping[str, np.ndarray], key: str, dtype: str, shape: tuple[int | None, ...]
) -> np.ndarray:
    """``arrays[key]`` with the given dtype and shape (``None``: any length)."""
    arr = arrays.get(key)
    if arr is None:
        raise CorruptFileError(f"missing array {key!r}")
    if (
        arr.dtype.name != dtype
        or arr.ndim != len(shape)
        or any(want is not None and got != want for got, want in zip(arr.shape, shape))
    ):
        raise CorruptFileError(f"array {key!r} is {arr.dtype.name} {arr.shape}, expected {dtype} {shape}")
    return arr


def check_finite(arr: np.ndarray, key: str) -> None:
    """Refuse NaN/inf in a float array (row by row blocks, no full-size temporary)."""
    flat = arr.reshape(-1)
    step = 1 << 20
    for start in range(0, flat.size, step):
        if not np.isfinite(flat[start : start + step]).all():
            raise CorruptFileError(f"array {key!r} contains NaN or infinity")
