"""``SimilarityModel``: a Keras 3 model that holds a simdex index.

The model maps inputs to embeddings (train it with :mod:`simdex.losses`); its
index stores the embeddings of reference items with their labels and optional
data, and answers nearest-neighbour lookups::

    inputs = keras.Input((64,))
    x = keras.layers.Dense(128, activation="relu")(inputs)
    outputs = simdex.MetricEmbedding(32)(x)
    model = simdex.SimilarityModel(inputs, outputs)          # cosine, ExactIndex
    model.compile(optimizer="adam", loss=simdex.losses.MultiSimilarityLoss())
    model.fit(sampler, epochs=3)
    model.index(x_ref, y_ref, data=images_ref)
    neighbours = model.lookup(x_query, k=5)                  # list of lists of Lookup
    model.save("digits.simdex"); model = simdex.load_model("digits.simdex")

Design: the model *holds* the index (``model.search_index``) and a small item
store (labels, data) keyed by the ids the index returns; calibration and
evaluation are thin calls into :mod:`simdex.calibration` / :mod:`simdex.metrics`.

Labels are integers; ``-1`` means "no label" (it is also what the metrics
modules use for a missing neighbour).

Why one module of ~750 lines: :class:`SimilarityModel` is one Keras class; its
methods are short calls into :mod:`simdex.index.collection` (storage), the evaluate
package (calibration, metrics) and :mod:`simdex.embed` (compiled forward); spreading
one class over several files would hide its API, and ``load_model`` reads what ``save``
writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import simdex.learn.layers  # noqa: F401  (registers the simdex layers with Keras, for load_model)
from simdex._optional import import_keras
from simdex._validate import MISSING_LABEL, as_labels, canonical_metric, check_positive_int
from simdex.index.collection import Collection
from simdex.index.io import (
    CorruptFileError,
    atomic_writer,
    pack_container,
    read_container,
    unpack_container,
    write_container,
)

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()
ops = keras.ops

__all__ = ["Lookup", "SimilarityModel", "load_model"]

_KIND = "SimilarityModel"
_FORMAT = 2  # 2: weights as raw arrays and a nested Collection state (no nested files)
_STATE_KIND = "SimilarityModelState"  # index, labels, data, calibration (no network)
_KERAS_STATE_ENTRY = "simdex/state.simdex"  # where a .keras archive keeps that state


@dataclass(frozen=True, eq=False, slots=True)
class Lookup:
    """One neighbour returned by :meth:`SimilarityModel.lookup`.

    Attributes:
        rank: 1 for the nearest neighbour, 2 for the next...
        distance: Distance to the query under the index metric (smaller is closer).
        label: The neighbour's integer label, or None if it was indexed without one.
        data: The data indexed with the neighbour, or None.
        embedding: The stored embedding, ``(d,)`` float32.
        id: The neighbour's id in the index.
    """

    rank: int
    distance: float
    label: int | None
    data: Any
    embedding: np.ndarray
    id: int


class _State:
    """Non-Keras state of a SimilarityModel (kept out of Keras' tracker)."""

    def __init__(self, distance: str, index_spec: Any, index: Any = None) -> None:
        self.distance = distance
        self.index_spec = index_spec
        self.collection = Collection(index, self._new_index)
        self.calibration: Any = None
        self.loss_layers: list[Any] = []
        self.compiled_forward: bool | None = None  # decided on the first embed()

    @property
    def index(self) -> Any:
        return self.collection.index

    def _new_index(self, dim: int) -> Any:
        from simdex.index import ExactIndex, LSHIndex

        if self.index_spec == "lsh":
            return LSHIndex(dim, metric=self.distance)
        return ExactIndex(dim, metric=self.distance)


def _is_index_like(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("add", "search", "reset", "get_vectors", "save", "__len__"))


@keras.saving.register_keras_serializable(package="simdex")
class SimilarityModel(keras.Model):
    """A Keras model whose outputs are embeddings, holding a simdex index.

    Build it like a functional model, ``SimilarityModel(inputs, outputs)``, or
    subclass it. The model must have one input and one ``(batch, d)`` output.

    Args:
        *args: Passed to ``keras.Model`` (``inputs, outputs`` for the functional API).
        distance: Index metric: ``"cosine"`` (default), ``"ip"``, ``"l2"``,
            ``"sql2"``. Pair it with the same ``distance`` in the loss.
        index: ``None``/``"exact"`` for :class:`simdex.ExactIndex`, ``"lsh"`` for
            :class:`simdex.LSHIndex` (created on first use with the embedding
            size), or an index object following the Index contract (it must
            then have the embedding size and, if it has a ``metric``, use
            ``distance``).
        **kwargs: Passed to ``keras.Model``.
    """

    def __init__(self, *args: Any, distance: str = "cosine", index: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        distance = canonical_metric(distance)
        if index is None or isinstance(index, str):
            spec = "exact" if index is None else index.lower()
            if spec not in ("exact", "lsh"):
                raise ValueError(f"index must be 'exact', 'lsh' or an index object, got {index!r}")
            self._sim = _State(distance, spec)
        elif _is_index_like(index):
            metric = getattr(index, "metric", distance)
            if metric != distance:
                raise ValueError(
                    f"the index uses metric {metric!r} but distance={distance!r}; make them agree"
                )
            self._sim = _State(distance, "custom", index)
        else:
            raise TypeError(
                f"index must be None, 'exact', 'lsh' or an index object, got {type(index).__name__}"
            )

    def _set_distance(self, distance: str) -> None:
        distance = canonical_metric(distance)
        st = self._sim
        if distance == st.distance:
            return
        if st.index is not None and (len(st.collection) > 0 or st.index_spec == "custom"):
            raise ValueError(
                f"the index already uses distance {st.distance!r}; cannot switch to {distance!r} "
                "(call reset_index() first, or build the model with this distance)"
            )
        st.distance = distance
        st.collection = Collection(None, st._new_index)  # built with the new metric on the next index()
        st.calibration = None

    # ------------------------------------------------------------------ properties / config
    @property
    def distance(self) -> str:
        """The index metric (canonical name)."""
        return self._sim.distance

    @property
    def search_index(self) -> Any:
        """The index object (None until the first :meth:`index` call for built-in kinds)."""
        return self._sim.index

    @property
    def calibration(self) -> Any:
        """The last :class:`simdex.CalibrationResult` from :meth:`calibrate`, or None."""
        return self._sim.calibration

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        spec = self._sim.index_spec
        config.update({"distance": self._sim.distance, "index": None if spec == "custom" else spec})
        return config

    # ------------------------------------------------------------------ training
    def compile(
        self, optimizer: Any = "rmsprop", loss: Any = None, distance: str | None = None, **kwargs: Any
    ) -> None:
        """``keras.Model.compile``; also trains the variables of losses that have some.

        Losses such as :class:`simdex.losses.ArcFaceLoss` expose
        ``trainable_layers``; their variables join :attr:`trainable_variables`
        so the optimiser updates them in ``fit``.

        Args:
            optimizer, loss, **kwargs: As for ``keras.Model.compile``.
            distance: TF Similarity's ``compile(distance=...)``: sets the index
                metric (as the constructor's ``distance``). It must agree with
                the index when one already holds items.

        Raises:
            ValueError: ``distance`` unknown, or different from a non-empty index's metric.
        """
        if distance is not None:
            self._set_distance(distance)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        layers: list[Any] = []
        pending = [loss]
        while pending:  # losses may be given as a list or a dict (one per output)
            item = pending.pop()
            if isinstance(item, (list, tuple)):
                pending.extend(item)
            elif isinstance(item, dict):
                pending.extend(item.values())
            elif item is not None:
                layers.extend(getattr(item, "trainable_layers", ()))
        self._sim.loss_layers = layers

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Recompile from ``get_compile_config()`` output (used by Keras' own ``.keras`` loading)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _loss_variables(self, own: list[Any]) -> list[Any]:
        seen = {id(v) for v in own}
        extra = []
        for layer in self._sim.loss_layers:
            for v in layer.trainable_weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    extra.append(v)
        return extra

    @property
    def trainable_weights(self) -> list[Any]:
        own = list(super().trainable_weights)
        return own + self._loss_variables(own) if self.trainable else own

    @property
    def trainable_variables(self) -> list[Any]:
        own = list(super().trainable_variables)
        return own + self._loss_variables(own) if self.trainable else own

    # ------------------------------------------------------------------ embedding
    def _check_x(self, x: Any) -> np.ndarray:
        if isinstance(x, (list, tuple, dict)) and len(self.inputs or ()) > 1:
            raise TypeError("SimilarityModel.index/lookup support single-input models only")
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"x must be a numeric array, got dtype {arr.dtype}")
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise ValueError(f"x must be a non-empty batch of examples, got shape {arr.shape}")
        inputs = getattr(self, "inputs", None)
        if inputs:
            expected = tuple(inputs[0].shape)[1:]
            got = arr.shape[1:]
            if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
                raise ValueError(
                    f"x has examples of shape {got} but the model expects {expected} (x.shape={arr.shape})"
                )
            dtype = inputs[0].dtype
            if arr.dtype.kind == "f" and str(dtype).startswith("float") and arr.dtype != np.dtype(dtype):
                arr = arr.astype(dtype)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError("x contains NaN or infinity")
        return arr

    def _uses_compiled_forward(self) -> bool:
        """Whether :meth:`embed` runs the compiled forward pass of :mod:`simdex.embeddings`.

        That module keeps one ``tf.function`` per model, traced once with a free
        batch axis. The trace reads the model's variables, so training or
        loading weights afterwards needs no retrace. It applies to models with
        one float32 input and one output on the TensorFlow backend; others run
        eagerly.
        """
        decided = self._sim.compiled_forward
        if decided is None:
            inputs: Sequence[Any] = getattr(self, "inputs", None) or ()
            outputs: Sequence[Any] = getattr(self, "outputs", None) or ()
            decided = (
                keras.backend.backend() == "tensorflow"
                and len(inputs) == 1
                and len(outputs) == 1
                and str(inputs[0].dtype) == "float32"
            )
            self._sim.compiled_forward = decided
        return decided

    def embed(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Embeddings of ``x``, ``batch_size`` rows per model call.

        On the TensorFlow backend, single-input float32 models run through a
        cached compiled forward pass (the one :func:`simdex.embeddings.embed`
        uses: traced once, no retracing across batch sizes); other models are
        called eagerly.

        Args:
            x: ``(n, *input_shape)`` array.
            batch_size: Rows per model call.

        Returns:
            ``(n, d)`` float32 embeddings.
        """
        arr = self._check_x(x)
        batch_size = check_positive_int(batch_size, "batch_size")
        if self._uses_compiled_forward():
            import tensorflow as tf

            from simdex.embed.embeddings import compiled_forward

            call = compiled_forward(self)
            arr = np.ascontiguousarray(arr, dtype=np.float32)  # the trace's input signature

            def run(batch: np.ndarray) -> Any:
                return call(tf.constant(batch)).numpy()
        else:

            def run(batch: np.ndarray) -> Any:
                return ops.convert_to_numpy(self(batch, training=False))

        parts = [
            np.asarray(run(arr[start : start + batch_size]), dtype=np.float32)
            for start in range(0, arr.shape[0], batch_size)
        ]
        emb = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        if emb.ndim != 2:
            raise ValueError(f"the model must output (batch, d) embeddings, got shape {emb.shape}")
        return emb

    # ------------------------------------------------------------------ index
    def index(
        self,
        x: Any,
        y: Any = None,
        data: Sequence[Any] | None = None,
        batch_size: int = 256,
        verbose: int = 1,
    ) -> np.ndarray:
        """Embed ``x`` and add it to the index with its labels and data.

        Args:
            x: ``(n, *input_shape)`` examples.
            y: ``(n,)`` integer labels, or None (items get no label).
            data: Sequence of ``n`` items kept with the embeddings (e.g. the raw
                images), or None. To be saved they must be same-shape NumPy
                arrays/scalars or JSON-serialisable values.
            batch_size: Rows per model call.
            verbose: 1 prints a one-line summary.

        Returns:
            ``(n,)`` int64 ids assigned by the index.

        Raises:
            ValueError: bad shapes, length mismatch between ``x``, ``y`` and ``data``.
            TypeError: non-integer labels, non-numeric ``x``.
        """
        arr = self._check_x(x)
        n = arr.shape[0]
        labels = None if y is None else as_labels(y, "y", n=n, column_ok=True)
        if data is not None:
            if (
                isinstance(data, (str, bytes))
                or not hasattr(data, "__len__")
                or not hasattr(data, "__getitem__")
            ):
                raise TypeError(
                    f"data must be a sequence with one item per example, got {type(data).__name__}"
                )
            if len(data) != n:
                raise ValueError(f"x has {n} examples but data has {len(data)} items")
        emb = self.embed(arr, batch_size=batch_size)
        try:
            ids = self._sim.collection.add(emb, labels=None if labels is None else labels.tolist(), data=data)
        except ValueError as e:
            raise ValueError(f"the model outputs {emb.shape[1]}-d embeddings: {e}") from e
        if verbose:
            print(f"[simdex] indexed {n} items; index size {self.index_size()}")
        return ids

    def _search(self, x: Any, k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        k = check_positive_int(k, "k")
        return self._search_embeddings(self.embed(x, batch_size=batch_size), k)

    def _search_embeddings(self, emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._sim.index
        if index is None or len(index) == 0:
            n = emb.shape[0]
            return np.full((n, k), np.inf, np.float32), np.full((n, k), -1, np.int64)
        if emb.shape[1] != int(index.dim):
            raise ValueError(
                f"the model outputs {emb.shape[1]}-d embeddings but the index holds {index.dim}-d vectors"
            )
        D, ids = index.search(emb, k)
        return np.asarray(D, dtype=np.float32), np.asarray(ids, dtype=np.int64)

    def lookup(self, x: Any, k: int = 5, batch_size: int = 256, verbose: int = 0) -> list[list[Lookup]]:
        """Nearest indexed neighbours of each example of ``x``.

        Args:
            x: ``(n, *input_shape)`` queries.
            k: Neighbours per query (>= 1).
            batch_size: Rows per model call.
            verbose: 1 prints a one-line summary (TF Similarity's argument).

        Returns:
            ``n`` lists of up to ``k`` :class:`Lookup` records, nearest first
            (fewer when the index holds fewer than ``k`` items).

        Raises:
            ValueError: ``k < 1``, bad input shape.
        """
        D, ids = self._search(x, k, batch_size)
        records = self._records(D, ids)
        if verbose:
            print(f"[simdex] looked up {len(records)} queries, k={k}")
        return records

    def index_single(self, x: Any, y: int | None = None, data: Any = None, verbose: int = 0) -> int:
        """Index one example (TF Similarity's ``index_single``).

        Args:
            x: One example, shape ``input_shape``.
            y: Its integer label, or None.
            data: Data kept with it, or None.
            verbose: 1 prints a one-line summary.

        Returns:
            The id the index gave it.
        """
        ids = self.index(
            np.asarray(x)[None, ...],
            None if y is None else np.asarray([y]),
            data=None if data is None else [data],
            verbose=verbose,
        )
        return int(ids[0])

    def to_data_frame(self, num_items: int = 0) -> Any:
        """The indexed items as a pandas DataFrame (TF Similarity's ``to_data_frame``).

        Args:
            num_items: Rows to return (the first ones by id); 0 means all.

        Returns:
            A DataFrame indexed by item id with columns ``label`` (int, -1 when
            unlabeled), ``data`` (object, None when absent) and ``embedding``
            (one float32 array per row).

        Raises:
            ImportError: pandas is missing (``pip install pandas``).
        """
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("to_data_frame needs pandas: pip install pandas") from e
        if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) or num_items < 0:
            raise ValueError(f"num_items must be an int >= 0, got {num_items!r}")
        st = self._sim
        if st.index is None or len(st.collection) == 0:
            return pd.DataFrame({"label": [], "data": [], "embedding": []})
        ids = np.sort(np.asarray(st.index.ids if hasattr(st.index, "ids") else self._known_ids(), np.int64))
        if num_items:
            ids = ids[:num_items]
        vectors = st.index.get_vectors(ids)
        return pd.DataFrame(
            {
                "label": st.collection.labels_of(ids, MISSING_LABEL, np.int64),
                "data": [st.collection.data.get(i) for i in ids.tolist()],
                "embedding": list(np.asarray(vectors)),
            },
            index=pd.Index(ids, name="id"),
        )

    def _known_ids(self) -> np.ndarray:
        coll = self._sim.collection
        return np.array(sorted(coll.labels.keys() | coll.data.keys()), dtype=np.int64)

    def _records(self, D: np.ndarray, ids: np.ndarray) -> list[list[Lookup]]:
        """Lookup records for ``(q, k)`` distances and ids (id -1: empty slot, skipped)."""
        valid = ids >= 0
        nvalid = int(np.count_nonzero(valid))
        if nvalid == 0:
            return [[] for _ in range(ids.shape[0])]
        # One native call for all embeddings and plain Python lists for the rest:
        # indexing NumPy arrays element by element costs more than building the records.
        vectors = list(self._sim.index.get_vectors(ids.ravel() if nvalid == ids.size else ids[valid]))
        collection = self._sim.collection
        label_get, data_get = collection.labels.get, collection.data.get
        out: list[list[Lookup]] = []
        pos = 0
        for drow, irow in zip(D.tolist(), ids.tolist()):
            row: list[Lookup] = []
            for dist, i in zip(drow, irow):
                if i < 0:
                    continue
                lab = label_get(i)
                label = None if lab == MISSING_LABEL else lab
                row.append(Lookup(len(row) + 1, dist, label, data_get(i), vectors[pos], i))
                pos += 1
            out.append(row)
        return out

    def single_lookup(self, x: Any, k: int = 5) -> list[Lookup]:
        """Neighbours of one example ``x`` (shape ``input_shape``).

        The same records as ``lookup(x[None], k)[0]``, through a path built for one
        example at a time (a service answering requests): on the TensorFlow
        backend the model runs as a one-row function compiled with XLA when the
        model allows it (see :func:`simdex.embeddings.compiled_single_forward`),
        and an :class:`~simdex.ExactIndex` answers from its float16 pre-filter.
        Embeddings agree with ``lookup``'s to float32 rounding (XLA may fuse
        operations differently).

        Raises:
            ValueError: ``k < 1``, or ``x`` is not one example of the model's input shape.
        """
        k = check_positive_int(k, "k")
        arr = self._check_x(np.asarray(x)[None, ...])
        if self._uses_compiled_forward():
            import tensorflow as tf

            from simdex.embed.embeddings import compiled_single_forward

            fn, _ = compiled_single_forward(self)
            emb = np.asarray(fn(tf.constant(arr, dtype=tf.float32)), dtype=np.float32)
            if emb.ndim != 2:
                raise ValueError(f"the model must output (batch, d) embeddings, got shape {emb.shape}")
        else:
            emb = self.embed(arr, batch_size=1)
        D, ids = self._search_embeddings(emb, k)
        return self._records(D, ids)[0]

    def reset_index(self) -> None:
        """Remove every item (embeddings, labels, data) from the index."""
        self._sim.collection.reset()

    def index_size(self) -> int:
        """Number of items in the index."""
        return len(self._sim.collection)

    def index_summary(self, print_fn: Any = print) -> dict[str, Any]:
        """Describe the index; print it with ``print_fn`` (None: don't print).

        Returns:
            ``{"index": repr, "size", "dim", "distance", "num_labels",
            "num_classes", "num_with_data", "calibrated"}``.
        """
        st = self._sim
        labels = [v for v in st.collection.labels.values() if v != MISSING_LABEL]
        info = {
            "index": repr(st.index) if st.index is not None else f"{st.index_spec} (not created yet)",
            "size": self.index_size(),
            "dim": None if st.index is None else int(st.index.dim),
            "distance": st.distance,
            "num_labels": len(labels),
            "num_classes": len(set(labels)),
            "num_with_data": len(st.collection.data),
            "calibrated": st.calibration is not None,
        }
        if print_fn is not None:
            for key, value in info.items():
                print_fn(f"{key:>14}: {value}")
        return info

    # ------------------------------------------------------------------ calibration / metrics
    def _neighbours(
        self, x: Any, y: Any, k: int, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arr = self._check_x(x)
        labels = as_labels(y, "y", n=arr.shape[0], column_ok=True)
        if self.index_size() == 0:
            raise ValueError("the index is empty: call model.index(...) first")
        D, ids = self._search(arr, k, batch_size)
        return D, self._sim.collection.labels_of(ids, MISSING_LABEL, np.int64), labels

    def calibrate(
        self,
        x: Any,
        y: Any,
        thresholds_targets: Mapping[str, float] | None = None,
        calibration_metric: str = "f1",
        k: int = 1,
        matcher: Any = "match_nearest",
        extra_metrics: Sequence[str] | None = ("precision", "recall", "binary_accuracy"),
        rounding: int | None = 2,
        verbose: int = 1,
        batch_size: int = 256,
    ) -> Any:
        """Look up ``x`` and calibrate distance thresholds with :func:`simdex.calibrate`.

        The result is kept (:attr:`calibration`), used by :meth:`match` and saved
        with the model.

        Args:
            x: ``(n, *input_shape)`` calibration examples (not the indexed ones).
            y: ``(n,)`` their integer labels (``-1``: class not in the index).
            thresholds_targets, calibration_metric, k, matcher, extra_metrics,
                rounding, verbose: See :func:`simdex.calibration.calibrate`.
            batch_size: Rows per model call.

        Returns:
            The :class:`simdex.CalibrationResult`.
        """
        from simdex.evaluate import calibration

        D, nl, labels = self._neighbours(x, y, k, batch_size)
        result = calibration.calibrate(
            D,
            nl,
            labels,
            thresholds_targets=thresholds_targets,
            calibration_metric=calibration_metric,
            k=k,
            matcher=matcher,
            extra_metrics=extra_metrics,
            rounding=rounding,
            verbose=verbose,
        )
        self._sim.calibration = result
        return result

    def match(
        self, x: Any, cutpoint: str | float = "optimal", no_match_label: int = -1, batch_size: int = 256
    ) -> np.ndarray:
        """Predicted labels of ``x``, or ``no_match_label`` beyond the calibrated threshold.

        Args:
            x: ``(n, *input_shape)`` examples.
            cutpoint: Name of a cutpoint of :attr:`calibration` (``"optimal"``,
                ``"0.99 precision"``...) or a distance threshold.
            no_match_label: Label for queries without a close enough neighbour.
            batch_size: Rows per model call.

        Returns:
            ``(n,)`` int64 labels. ``k`` and the matcher are the calibration's.

        Raises:
            ValueError: the model is not calibrated, or ``cutpoint`` is unknown.
        """
        from simdex.evaluate import calibration

        cal = self._sim.calibration
        if cal is None:
            raise ValueError("the model is not calibrated: call model.calibrate(x, y) first")
        if isinstance(cutpoint, str):
            if cutpoint not in cal.cutpoints:
                raise ValueError(f"unknown cutpoint {cutpoint!r}; available: {sorted(cal.cutpoints)}")
            threshold: Any = cal.cutpoints[cutpoint]
        else:
            threshold = cutpoint
        k = int(cal.k)
        if self.index_size() == 0:
            raise ValueError("the index is empty: call model.index(...) first")
        D, ids = self._search(x, k, batch_size)
        nl = self._sim.collection.labels_of(ids, MISSING_LABEL, np.int64)
        return calibration.match(D, nl, threshold, k=k, matcher=cal.matcher, no_match_label=no_match_label)

    def evaluate_retrieval(
        self,
        x: Any,
        y: Any,
        k: int = 5,
        metrics: Sequence[Any] | None = None,
        batch_size: int = 256,
        *,
        retrieval_metrics: Sequence[Any] | None = None,
        distance_threshold: float | None = None,
        verbose: int = 0,
    ) -> dict[str, float]:
        """Retrieval metrics of ``x`` against the index (:func:`simdex.metrics.evaluate_retrieval`).

        ``num_relevant`` is the number of indexed items with each query's label,
        so ``map@r`` and ``r_precision`` are included; queries whose class is
        not in the index are left out.

        Args:
            x: ``(n, *input_shape)`` queries (not in the index).
            y: ``(n,)`` their integer labels.
            k: Neighbours to retrieve (raised to the largest cutoff a metric needs,
                and to the largest indexed class for ``map@r`` / ``r_precision``).
            metrics: Metric names (default: the module's defaults), or objects
                with a ``name`` (e.g. :class:`simdex.metrics.RecallAtK`).
            batch_size: Rows per model call.
            retrieval_metrics: TF Similarity's name for ``metrics``.
            distance_threshold: Neighbours farther than this count as not
                retrieved (TF Similarity's argument); None keeps every neighbour.
            verbose: 1 prints the results.

        Returns:
            Metric name -> float.
        """
        from simdex.evaluate import metrics as _metrics
        from simdex.evaluate import retrieval_metrics as _rm

        if retrieval_metrics is not None:
            if metrics is not None:
                raise TypeError("pass metrics or retrieval_metrics, not both")
            metrics = retrieval_metrics
        names = None if metrics is None else _rm.metric_names(metrics)
        counts: dict[int, int] = {}
        for lab in self._sim.collection.labels.values():
            counts[lab] = counts.get(lab, 0) + 1
        if names is not None:
            k = max([k, *(_rm.cutoff(nm) for nm in names)])
            whole_class = {"map@r", "r_precision", "mean_average_precision_at_r"}
            if counts and any(nm.strip().lower() in whole_class for nm in names):
                k = max(k, max(counts.values()))  # MAP@R and R-precision look at R neighbours
        D, nl, labels = self._neighbours(x, y, k, batch_size)
        if distance_threshold is not None:
            t = float(distance_threshold)
            if np.isnan(t):
                raise ValueError("distance_threshold is NaN")
            nl = np.where(D <= t, nl, MISSING_LABEL)
        num_relevant = np.array([counts.get(int(v), 0) for v in labels], dtype=np.int64)
        result = _metrics.evaluate_retrieval(labels, nl, k=k, metrics=names, num_relevant=num_relevant)
        if verbose:
            for name, value in result.items():
                print(f"{name:>16}: {value:.4f}")
        return result

    def evaluate_classification(
        self,
        x: Any,
        y: Any,
        k: int = 1,
        thresholds: Any = None,
        matcher: Any = "match_nearest",
        metrics: Sequence[str] | None = None,
        batch_size: int = 256,
        *,
        extra_metrics: Sequence[str] | None = None,
        verbose: int = 0,
    ) -> dict[str, np.ndarray]:
        """Thresholded classification metrics (:func:`simdex.metrics.evaluate_classification`).

        Args:
            x: ``(n, *input_shape)`` queries.
            y: ``(n,)`` integer labels (``-1``: class not in the index).
            k: Neighbours the matcher sees.
            thresholds: Distance thresholds (default: every distinct distance).
            matcher: Matcher name/config/instance.
            metrics: Metric names.
            batch_size: Rows per model call.
            extra_metrics: TF Similarity's argument: metrics computed besides
                ``f1`` (``metrics = ["f1", *extra_metrics]``).
            verbose: Accepted for TF Similarity compatibility (nothing is printed).

        Returns:
            ``{"distance": (m,), <metric>: (m,)}`` float64 arrays.
        """
        from simdex.evaluate import metrics as _metrics

        if extra_metrics is not None:
            if metrics is not None:
                raise TypeError("pass metrics or extra_metrics, not both")
            extra = [extra_metrics] if isinstance(extra_metrics, str) else list(extra_metrics)
            metrics = list(dict.fromkeys(["f1", *extra]))
        D, nl, labels = self._neighbours(x, y, k, batch_size)
        return _metrics.evaluate_classification(
            labels, nl, D, thresholds=thresholds, k=k, matcher=matcher, metrics=metrics
        )

    # ------------------------------------------------------------------ persistence
    def save(self, filepath: str | os.PathLike[str], overwrite: bool = True, **kwargs: Any) -> None:  # type: ignore[override]
        """Save architecture, weights, index, labels, data and calibration to one file.

        The file is written atomically: if anything fails, a previous file at
        ``filepath`` is left untouched. Load it with :func:`simdex.load_model`.

        * ``*.keras``: a real Keras archive (``keras.models.load_model`` reads the
          model and its weights, compile settings and optimiser state, as for any
          Keras model) with the index, labels, data and calibration in an extra
          ``simdex/state.simdex`` entry that :func:`simdex.load_model` and
          :meth:`load_index` restore.
        * ``*.h5`` / ``*.hdf5``: refused (Keras' legacy HDF5 format cannot hold the index).
        * any other name (e.g. ``"model.simdex"``): simdex's own single-file format;
          the optimiser state and the compile settings are not saved.

        Args:
            filepath: Destination file.
            overwrite: If False and ``filepath`` exists, raise ``FileExistsError``.
            **kwargs: TF Similarity's ``save_index`` (False: leave the index, labels,
                data and calibration out) and ``compression`` (ignored).

        Raises:
            ValueError: an ``.h5``/``.hdf5`` name.
            TypeError: indexed data that is neither same-shape arrays nor
                JSON-serialisable; an index that cannot be saved; unknown arguments.
        """
        save_index = bool(kwargs.pop("save_index", True))  # TF Similarity's arguments
        kwargs.pop("compression", None)  # the index is stored as is
        if kwargs:
            raise TypeError(f"SimilarityModel.save() got unexpected arguments {sorted(kwargs)}")
        path = os.fspath(filepath)
        lower = path.lower()
        if lower.endswith((".h5", ".hdf5")):
            raise ValueError(
                f"cannot save a SimilarityModel to {path!r}: Keras' legacy HDF5 format cannot hold the "
                "index; use a '.keras' name (Keras archive + index) or '.simdex' (simdex's format)"
            )
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"{path!r} exists and overwrite=False")
        params, arrays = self._state_payload(with_index=save_index)
        if lower.endswith(".keras"):
            self._save_keras_archive(path, params, arrays)
            return
        try:
            architecture = keras.saving.serialize_keras_object(self)
            architecture.pop("compile_config", None)  # compile state is not saved (documented)
            json.dumps(architecture)
        except (NotImplementedError, TypeError, ValueError) as e:
            raise TypeError(f"cannot serialise the model architecture ({e}); implement get_config()") from e
        weights = [np.ascontiguousarray(w) for w in self.get_weights()]
        params["architecture"] = architecture
        params["weights"] = [{"dtype": w.dtype.str, "shape": list(w.shape)} for w in weights]
        for i, w in enumerate(weights):  # raw bytes: any dtype Keras uses (float16 included)
            arrays[f"weights/{i}"] = w.reshape(-1).view(np.uint8) if w.size else np.empty(0, np.uint8)
        write_container(path, _KIND, params, arrays)

    def _state_payload(self, with_index: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Params and arrays of the non-Keras state: the collection (index, labels, data), calibration."""
        st = self._sim
        collection = st.collection if with_index else Collection(None, st._new_index)
        collection_params, collection_arrays = collection.state()
        calibration = st.calibration if with_index else None
        params: dict[str, Any] = {
            "format": _FORMAT,
            "distance": st.distance,
            "index_spec": st.index_spec,
            "keras_version": keras.__version__,
            "calibration": None if calibration is None else calibration.to_dict(),
            "collection": collection_params,
        }
        return params, {f"collection/{k}": v for k, v in collection_arrays.items()}

    def _save_keras_archive(self, path: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        import io
        import zipfile

        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and self.built and not getattr(optimizer, "built", True):
            # Loading a compiled model builds its optimizer; build it now so the saved
            # optimizer state has the variables the loader expects (a compiled, unfit model).
            optimizer.build(self.trainable_variables)
        import tempfile

        # Keras' public save_model writes only to a path ending in .keras: let it write one in a
        # scratch folder, then add our state (packed in memory) and write the result atomically.
        with tempfile.TemporaryDirectory(prefix="simdex-save-") as tmp:
            scratch = os.path.join(tmp, "model.keras")
            keras.saving.save_model(self, scratch)
            with open(scratch, "rb") as f:
                buffer = io.BytesIO(f.read())
        with zipfile.ZipFile(buffer, "a") as zf:
            zf.writestr(_KERAS_STATE_ENTRY, pack_container(_STATE_KIND, params, arrays))
        with atomic_writer(path) as dst:
            dst.write(buffer.getvalue())

    # ------------------------------------------------------------------ TF Similarity names
    def save_index(self, filepath: str | os.PathLike[str]) -> None:
        """Save the index with its labels, data and calibration (not the network) to one file.

        TF Similarity's ``save_index``; restore with :meth:`load_index`.
        """
        params, arrays = self._state_payload()
        write_container(os.fspath(filepath), _STATE_KIND, params, arrays)

    def load_index(self, filepath: str | os.PathLike[str]) -> None:
        """Replace the index, labels, data and calibration with those saved by :meth:`save_index`
        (or by :meth:`save`: TF Similarity's ``reloaded.load_index(save_path)``).

        Raises:
            FileNotFoundError: no such file.
            simdex.CorruptFileError: not a file written by :meth:`save_index` or :meth:`save`.
        """
        path = os.fspath(filepath)
        kind, params, arrays = _read_state(path)
        if kind == _KIND and int(params.get("format", 0)) < 2:
            raise CorruptFileError(f"{path!r} is a simdex 0.1 model file: load it with simdex.load_model")
        if kind not in (_STATE_KIND, _KIND):
            raise CorruptFileError(f"{path!r} holds a {kind!r}, not a saved SimilarityModel index")
        _restore_state(self, path, params, arrays)


def _read_state(path: str) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """The container of a model/state file, or the state entry of a ``.keras`` archive."""
    import zipfile

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if _KERAS_STATE_ENTRY not in zf.namelist():
                raise CorruptFileError(f"{path!r} is a Keras archive without a simdex index")
            return unpack_container(zf.read(_KERAS_STATE_ENTRY), f"{path}:{_KERAS_STATE_ENTRY}")
    return read_container(path)


def _restore_state(
    model: SimilarityModel, path: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> None:
    """Put a saved collection (index, labels, data), distance and calibration into ``model``."""
    if int(params.get("format", 0)) > _FORMAT:
        raise CorruptFileError(f"{path!r} uses model format {params.get('format')}; upgrade simdex")
    try:
        collection_arrays = {
            k[len("collection/") :]: v for k, v in arrays.items() if k.startswith("collection/")
        }
        collection = Collection.from_state(params["collection"], collection_arrays, model._sim._new_index)
        calibration = params.get("calibration")
        if calibration is not None:
            from simdex.evaluate.calibration import CalibrationResult

            calibration = CalibrationResult.from_dict(calibration)
    except (KeyError, ValueError, TypeError) as e:
        if isinstance(e, CorruptFileError):
            raise
        raise CorruptFileError(f"{path!r} has inconsistent model contents: {e}") from e
    model._sim.collection = collection
    model._sim.distance = str(params.get("distance", model._sim.distance))
    model._sim.index_spec = str(params.get("index_spec", model._sim.index_spec))
    model._sim.calibration = calibration


def _restore_format1(
    model: SimilarityModel, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> None:
    """Weights, index, labels and data of a file written by simdex 0.1 (model format 1)."""
    import tempfile

    from simdex.index.base import load_index

    item_ids, labels = arrays["item_ids"], arrays["labels"]
    legacy = {f"data/{k[len('data_') :]}": v for k, v in arrays.items() if k.startswith("data_")}
    # Format 1 nested two files (Keras HDF5 weights, an index file); Keras reads weights from a path.
    with tempfile.TemporaryDirectory(prefix="simdex-load-") as tmp:
        weights_path = os.path.join(tmp, "model.weights.h5")
        arrays["weights"].tofile(weights_path)
        model.load_weights(weights_path)
        index = None
        if "index" in arrays:
            index_path = os.path.join(tmp, "index.simdex")
            arrays["index"].tofile(index_path)
            index = load_index(index_path)
    state = model._sim
    state.collection = Collection(index, state._new_index)
    state.collection.labels.update(
        {int(i): int(lab) for i, lab in zip(item_ids.tolist(), labels.tolist()) if lab != MISSING_LABEL}
    )
    state.collection.data.update(Collection.from_state({"data": params.get("data", {})}, legacy).data)


def load_model(
    filepath: str | os.PathLike[str], custom_objects: Mapping[str, Any] | None = None, safe_mode: bool = True
) -> SimilarityModel:
    """Load a model written by :meth:`SimilarityModel.save` (``.keras`` archive or simdex format).

    Args:
        filepath: The file.
        custom_objects: Custom layers/functions the architecture refers to
            (classes registered with ``keras.saving.register_keras_serializable``
            need not be listed).
        safe_mode: Passed to Keras deserialisation (``False`` allows ``Lambda`` layers).

    Returns:
        The model, with weights, index, labels, data and calibration restored
        (not compiled).

    Raises:
        FileNotFoundError: no such file.
        simdex.CorruptFileError: not a simdex model file, corrupted or truncated.
    """
    import zipfile

    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if zipfile.is_zipfile(path):  # a .keras archive: Keras reads the network, then the simdex state
        model = keras.saving.load_model(path, custom_objects=dict(custom_objects or {}), safe_mode=safe_mode)
        if not isinstance(model, SimilarityModel):
            raise CorruptFileError(
                f"{path!r} is a Keras archive of a {type(model).__name__}, not a SimilarityModel"
            )
        with zipfile.ZipFile(path) as zf:
            has_state = _KERAS_STATE_ENTRY in zf.namelist()
        if has_state:
            kind, params, arrays = _read_state(path)
            if kind != _STATE_KIND:
                raise CorruptFileError(f"{path!r} has a {kind!r} where the simdex state belongs")
            _restore_state(model, path, params, arrays)
        return model
    kind, params, arrays = read_container(path)
    if kind != _KIND:
        raise CorruptFileError(
            f"{path!r} holds a {kind!r}, not a SimilarityModel (use simdex.load_index for indexes)"
        )
    if int(params.get("format", 0)) > _FORMAT:
        raise CorruptFileError(f"{path!r} uses model format {params.get('format')}; upgrade simdex")
    try:
        architecture = params["architecture"]
    except KeyError as e:
        raise CorruptFileError(f"{path!r} has inconsistent model contents: {e}") from e
    model = keras.saving.deserialize_keras_object(
        architecture, custom_objects=dict(custom_objects or {}), safe_mode=safe_mode
    )
    if not isinstance(model, SimilarityModel):
        raise CorruptFileError(f"{path!r} does not describe a SimilarityModel (got {type(model).__name__})")
    try:
        if int(params.get("format", 0)) < 2:
            _restore_format1(model, params, arrays)
        else:
            weights = [
                arrays[f"weights/{i}"].view(np.dtype(spec["dtype"])).reshape(spec["shape"])
                for i, spec in enumerate(params["weights"])
            ]
            model.set_weights(weights)
    except (KeyError, ValueError, TypeError) as e:
        if isinstance(e, CorruptFileError):
            raise
        raise CorruptFileError(f"{path!r} has inconsistent model contents: {e}") from e
    if int(params.get("format", 0)) >= 2:
        _restore_state(model, path, params, arrays)
        return model
    model._sim.distance = str(params.get("distance", model._sim.distance))
    model._sim.index_spec = str(params.get("index_spec", model._sim.index_spec))
    if params.get("calibration") is not None:
        from simdex.evaluate.calibration import CalibrationResult

        model._sim.calibration = CalibrationResult.from_dict(params["calibration"])
    return model
