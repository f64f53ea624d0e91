"""Near-duplicate image search: embed, index, query, group.

:class:`NearDuplicateFinder` holds an embedder (a Keras model, an
:class:`simdex.OnnxEmbedder`, or anything with ``embed``) and an index
(``simdex.LSHIndex`` by default, any index following the simdex Index
contract otherwise). It embeds images in batches, indexes the L2-normalised
embeddings, answers k-nearest-neighbour queries with cosine similarities, and
groups near-duplicates of the collection with a union-find over the pairs
whose similarity reaches a threshold.

Example:
    >>> finder = simdex.NearDuplicateFinder(embedder)
    >>> finder.add(images, labels=labels)
    >>> ids, labels, sims = finder.query(images[0], k=5)
    >>> groups = finder.find_duplicates(threshold=0.95)

Why a little over 450 lines: one class, its progress bar and its file format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from simdex._validate import METRICS, check_k, check_positive_int
from simdex.embed.embeddings import Embedder, are_samples, as_embedder
from simdex.index import LSHIndex, load_index
from simdex.index.collection import Collection
from simdex.index.io import CorruptFileError, read_container, write_container

__all__ = ["Matches", "NearDuplicateFinder"]

_FORMAT = 2  # 2: a nested Collection state (1: a nested index file and JSON labels)
_KIND = "NearDuplicateFinder"


class Matches(NamedTuple):
    """Result of :meth:`NearDuplicateFinder.query`.

    For a batch of ``q`` queries every field has shape ``(q, k)``; for a single
    query, ``(k,)``. Slots beyond the collection size hold id ``-1``, label
    ``None`` and similarity ``-inf``.

    Attributes:
        ids: int64 ids of the neighbours, most similar first.
        labels: object array of their labels (``None`` where none was given).
        similarities: float32 cosine similarities (``1 - cosine distance``).
    """

    ids: np.ndarray
    labels: np.ndarray
    similarities: np.ndarray


def _similarity(distances: np.ndarray, metric: str) -> np.ndarray:
    """Cosine similarity of unit vectors from an index's distances."""
    d = np.asarray(distances, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        if metric == "cosine":
            sim = 1.0 - d
        elif metric == "ip":
            sim = -d
        elif metric == "l2":
            sim = 1.0 - 0.5 * d * d
        elif metric == "sql2":
            sim = 1.0 - 0.5 * d
        else:  # pragma: no cover - rejected in _check_index
            raise ValueError(f"unsupported metric {metric!r}")
    return np.where(np.isfinite(d), sim, -np.inf).astype(np.float32)


def _check_index(index: Any) -> Any:
    for attr in ("add", "search", "get_vectors", "ids", "dim", "metric", "save"):
        if not hasattr(index, attr):
            raise TypeError(
                f"index must follow the simdex Index contract; {type(index).__name__} lacks {attr!r}"
            )
    if index.metric not in METRICS:
        raise ValueError(f"index metric must be 'cosine', 'ip', 'l2' or 'sql2', got {index.metric!r}")
    return index


def _default_index(dim: int) -> Any:
    """``simdex.LSHIndex(dim, seed=0)``."""
    return LSHIndex(dim, seed=0)


def _json_label(label: Any) -> Any:
    if isinstance(label, np.generic):
        label = label.item()
    if label is None or isinstance(label, (bool, int, float, str)):
        return label
    raise TypeError(f"labels must be None, bool, int, float or str to be saved, got {type(label).__name__}")


class _Progress:
    """tqdm progress bar when tqdm is installed and wanted, else nothing."""

    def __init__(self, total: int | None, verbose: int) -> None:
        self._bar = None
        if verbose:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # a progress bar is a nicety, never a requirement
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, unit="img", desc="embedding")

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class NearDuplicateFinder:
    """Find near-duplicate images with an embedder and a similarity index.

    The embedder must produce L2-normalised vectors (every simdex embedder
    does); similarities are then cosine similarities in ``[-1, 1]``.

    Args:
        embedder: A Keras model, an :class:`~simdex.embeddings.Embedder`
            (e.g. :class:`simdex.OnnxEmbedder`), or a callable mapping a
            float32 batch to ``(b, d)`` vectors.
        index: An index following the simdex Index contract with metric
            ``"cosine"`` (or ``"ip"``, ``"l2"``, ``"sql2"``). ``None`` creates
            ``simdex.LSHIndex(d, seed=0)`` (``simdex.ExactIndex(d)`` where LSH
            is not available) once the embedding size ``d`` is known.
        batch_size: Images per forward pass.

    Raises:
        TypeError: ``embedder`` or ``index`` is of the wrong kind.
        ValueError: bad ``batch_size``, index metric, or index/embedder sizes.
    """

    def __init__(self, embedder: Any, index: Any = None, batch_size: int = 256) -> None:
        self.embedder: Embedder = as_embedder(embedder)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        index = None if index is None else _check_index(index)
        dim = getattr(self.embedder, "dim", None)
        if index is not None and dim is not None and index.dim != dim:
            raise ValueError(f"the index has dim {index.dim} but the embedder produces {dim}-d vectors")
        self._collection = Collection(index, _default_index)

    # -- state --------------------------------------------------------------------------
    @property
    def index(self) -> Any:
        """The index (``None`` until the first :meth:`add` or :meth:`query` when created lazily)."""
        return self._collection.index

    @property
    def _index(self) -> Any:
        return self._collection.index

    def _ensure_index(self, dim: int) -> Any:
        try:
            return self._collection.ensure_index(dim)
        except ValueError:
            raise ValueError(
                f"the embedder produced {dim}-d vectors but the index has dim {self._index.dim}"
            ) from None

    def __len__(self) -> int:
        return len(self._collection)

    def __repr__(self) -> str:
        return f"NearDuplicateFinder(size={len(self)}, index={self._index!r}, embedder={self.embedder!r})"

    def labels_of(self, ids: Any) -> np.ndarray:
        """Labels of ``ids`` as an object array (``None`` where no label was given).

        Raises:
            KeyError: an id is not in the collection.
        """
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        present = np.isin(arr, self._index.ids) if self._index is not None else np.zeros(arr.shape, bool)
        if not present.all():
            raise KeyError(f"ids not in the collection: {arr[~present][:10].tolist()}")
        out = np.empty(arr.shape, dtype=object)
        for j, i in enumerate(arr.tolist()):  # element-wise: labels may be tuples or lists
            out[j] = self._collection.labels.get(i)
        return out

    # -- embedding ----------------------------------------------------------------------
    def _chunks(self, images: Any) -> tuple[Iterator[Any], int | None]:
        """Split ``images`` into batches, with the total count where known."""
        if isinstance(images, (str, bytes)) or images is None:
            raise TypeError(f"images must be an array or an iterable of arrays, got {type(images).__name__}")
        if isinstance(images, np.ndarray) or hasattr(images, "__array__"):
            arr = np.asarray(images)
            input_shape = getattr(self.embedder, "input_shape", None)
            if arr.ndim >= 1 and not are_samples([arr], input_shape):
                n = arr.shape[0]
                return (arr[s : s + self.batch_size] for s in range(0, n, self.batch_size)), n
            return iter([arr[np.newaxis]]), 1  # a single image
        if isinstance(images, Iterable):
            return iter(images), (len(images) if isinstance(images, Sequence) else None)
        raise TypeError(f"images must be an array or an iterable of arrays, got {type(images).__name__}")

    def _embed_all(self, images: Any, verbose: int) -> np.ndarray:
        chunks, total = self._chunks(images)
        bar = _Progress(total, verbose)
        out = []
        try:
            for chunk in chunks:
                vecs = np.asarray(self.embedder.embed(chunk, batch_size=self.batch_size), dtype=np.float32)
                if vecs.ndim != 2:
                    raise ValueError(f"the embedder returned shape {vecs.shape}, expected (n, d)")
                out.append(vecs)
                bar.update(vecs.shape[0])
        finally:
            bar.close()
        if not out:
            dim = getattr(self.embedder, "dim", None) or (self._index.dim if self._index is not None else 0)
            return np.zeros((0, dim), dtype=np.float32)
        return np.concatenate(out, axis=0)

    # -- public API ---------------------------------------------------------------------
    def add(
        self,
        images: Any,
        labels: Sequence[Any] | np.ndarray | None = None,
        ids: Sequence[int] | np.ndarray | None = None,
        verbose: int = 1,
    ) -> np.ndarray:
        """Embed and index images.

        All images are embedded first (batch by batch, with a tqdm progress bar
        when ``verbose``) and indexed in one step, so a failure leaves the
        collection unchanged.

        Args:
            images: ``(n, *input_shape)`` array (any real dtype), or an iterable
                of such batches.
            labels: ``n`` labels (any values; ``None``, bool, int, float or str
                if you want to :meth:`save`), or ``None``.
            ids: ``n`` distinct non-negative int ids not yet in the collection,
                or ``None`` for fresh ones.
            verbose: 0 for silence, 1 for a progress bar.

        Returns:
            int64 ids of the added images, shape ``(n,)``.

        Raises:
            ValueError: bad shapes, NaN, label/id counts that differ from the
                number of images, repeated or existing ids.
            TypeError: non-numeric images or non-integer ids.
        """
        vecs = self._embed_all(images, verbose)
        n = vecs.shape[0]
        if labels is not None:
            if isinstance(labels, (str, bytes)):
                raise TypeError("labels must be a sequence with one label per image, got a string")
            labels = list(labels)
            if len(labels) != n:
                raise ValueError(f"got {len(labels)} labels for {n} images")
        if ids is not None:
            ids_arr = np.asarray(ids)
            if ids_arr.ndim != 1 or ids_arr.shape[0] != n:
                raise ValueError(f"ids must have shape ({n},) to match the images, got {ids_arr.shape}")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        index = self._ensure_index(vecs.shape[1])
        new_ids = np.asarray(index.add(vecs, ids=ids), dtype=np.int64)
        if labels is not None:
            self._collection.labels.update(zip(new_ids.tolist(), labels))
        return new_ids

    def query(self, image_or_batch: Any, k: int = 10) -> Matches:
        """The ``k`` most similar images of the collection.

        Args:
            image_or_batch: One image ``input_shape`` (or without its trailing
                channel of size 1) or a batch ``(q, *input_shape)``.
            k: Neighbours per query.

        Returns:
            :class:`Matches` ``(ids, labels, similarities)``: shapes ``(k,)`` for
            one image, ``(q, k)`` for a batch; most similar first.

        Raises:
            ValueError: bad shapes, NaN, ``k < 1``.
            TypeError: non-numeric input, non-integer ``k``.
        """
        k = check_k(k)
        x = image_or_batch
        if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
            x = x.numpy()
        x = np.asarray(x)
        single = are_samples([x], getattr(self.embedder, "input_shape", None))
        vecs = np.asarray(self.embedder.embed(x[np.newaxis] if single else x, batch_size=self.batch_size))
        if vecs.ndim != 2:
            raise ValueError(f"the embedder returned shape {vecs.shape}, expected (n, d)")
        index = self._ensure_index(vecs.shape[1])
        if vecs.shape[0] == 0:
            empty = np.zeros((0, int(k)))
            return Matches(empty.astype(np.int64), empty.astype(object), empty.astype(np.float32))
        dist, nbr = index.search(vecs, k=int(k))
        dist, nbr = np.atleast_2d(dist), np.atleast_2d(np.asarray(nbr, dtype=np.int64))
        sims = _similarity(dist, index.metric)
        labels = np.empty(nbr.shape, dtype=object)
        for (r, c), i in np.ndenumerate(nbr):
            labels[r, c] = self._collection.labels.get(int(i)) if i >= 0 else None
        if single:
            return Matches(nbr[0], labels[0], sims[0])
        return Matches(nbr, labels, sims)

    def find_duplicates(self, threshold: float = 0.95, k: int = 10) -> list[list[int]]:
        """Group the collection's near-duplicates.

        Every stored image is searched against the collection for its ``k``
        nearest neighbours; pairs with similarity ``>= threshold`` are joined
        with a union-find, so a group can be larger than ``k + 1`` through
        chains of close pairs.

        Args:
            threshold: Cosine similarity in ``[-1, 1]`` at or above which two
                images are near-duplicates.
            k: Neighbours examined per image.

        Returns:
            Groups of two or more ids (sorted ascending), largest group first,
            ties by smallest id.

        Raises:
            ValueError: ``threshold`` outside ``[-1, 1]`` or NaN, ``k < 1``.
        """
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
            raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
        if not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
        k = check_k(k)
        if self._index is None or len(self._index) < 2:
            return []
        index = self._index
        ids = np.asarray(index.ids, dtype=np.int64)
        position = {int(i): p for p, i in enumerate(ids)}
        parent = np.arange(ids.shape[0])

        def find(p: int) -> int:
            root = p
            while parent[root] != root:
                root = parent[root]
            while parent[p] != root:  # path compression
                parent[p], p = root, parent[p]
            return root

        step = max(self.batch_size, 1024)
        kk = min(int(k) + 1, ids.shape[0])
        for start in range(0, ids.shape[0], step):
            batch_ids = ids[start : start + step]
            dist, nbr = index.search(index.get_vectors(batch_ids), k=kk)
            sims = _similarity(np.atleast_2d(dist), index.metric)
            nbr = np.atleast_2d(nbr)
            rows, cols = np.nonzero((sims >= threshold) & (nbr >= 0) & (nbr != batch_ids[:, None]))
            for r, c in zip(rows.tolist(), cols.tolist()):
                a, b = find(start + r), find(position[int(nbr[r, c])])
                if a != b:
                    parent[max(a, b)] = min(a, b)
        roots = np.array([find(p) for p in range(ids.shape[0])])
        groups: dict[int, list[int]] = {}
        for p, root in enumerate(roots.tolist()):
            groups.setdefault(root, []).append(int(ids[p]))
        out = [sorted(g) for g in groups.values() if len(g) > 1]
        out.sort(key=lambda g: (-len(g), g[0]))
        return out

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the collection (index, labels, and an ONNX embedder's graph) to one file.

        The write is atomic: a failure leaves any previous file intact. A Keras
        embedder is not stored; pass it to :meth:`load` (or export it with
        :func:`simdex.export_onnx` and use an :class:`simdex.OnnxEmbedder`,
        which is stored).

        Raises:
            ValueError: the finder is empty and has no index yet.
            TypeError: a label is not ``None``/bool/int/float/str.
        """
        if self._index is None:
            raise ValueError("nothing to save: add images first")
        for value in self._collection.labels.values():
            _json_label(value)  # None / bool / int / float / str only: they load back as they were
        collection_params, collection_arrays = self._collection.state()
        arrays = {f"collection/{k}": v for k, v in collection_arrays.items()}
        onnx_bytes = getattr(self.embedder, "model_bytes", None)
        if isinstance(onnx_bytes, bytes):
            arrays["onnx_model"] = np.frombuffer(onnx_bytes, dtype=np.uint8)
        params = {"format": _FORMAT, "batch_size": self.batch_size, "collection": collection_params}
        write_container(path, _KIND, params, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], embedder: Any = None) -> NearDuplicateFinder:
        """Read a finder written by :meth:`save`.

        Args:
            path: File to read.
            embedder: The embedder to use; ``None`` uses the stored ONNX graph
                (on :class:`simdex.OnnxEmbedder`), if the file has one.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            CorruptFileError: the file is damaged or not a saved finder.
            ValueError: no embedder given and none stored, or sizes differ.
        """
        kind, params, arrays = read_container(path)
        if kind != _KIND:
            raise CorruptFileError(f"{os.fspath(path)!r} holds a {kind!r}, not a saved NearDuplicateFinder")
        if int(params.get("format", 0)) > _FORMAT:
            raise CorruptFileError(f"{os.fspath(path)!r} was written by a newer simdex: upgrade simdex")
        if embedder is None:
            if "onnx_model" not in arrays:
                raise ValueError(f"{os.fspath(path)!r} stores no embedder: pass embedder=")
            from simdex.embed.export import OnnxEmbedder

            embedder = OnnxEmbedder(arrays["onnx_model"].tobytes())
        try:
            batch_size = int(params["batch_size"])
            if int(params.get("format", 0)) < 2:
                collection = _load_format1(params, arrays)
            else:
                sub = {k[len("collection/") :]: v for k, v in arrays.items() if k.startswith("collection/")}
                collection = Collection.from_state(params["collection"], sub, _default_index)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, CorruptFileError):
                raise
            raise CorruptFileError(f"{os.fspath(path)!r} has malformed finder contents: {e}") from e
        finder = cls(embedder, index=collection.index, batch_size=batch_size)
        finder._collection = collection
        return finder


def _load_format1(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Collection:
    """The collection of a file written by simdex 0.1 (finder format 1: a nested index file)."""
    import contextlib
    import tempfile

    labels = {int(i): v for i, v in json.loads(params["labels"])}
    fd, tmp = tempfile.mkstemp(prefix=".simdex-index-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(arrays["index_file"].tobytes())
        index = load_index(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    collection = Collection(index, _default_index)
    collection.labels.update(labels)
    return collection
