"""Class-balanced batch samplers for metric learning.

Pair and triplet losses need every batch to hold several examples of each of
its classes. :class:`MultiShotMemorySampler` draws such batches from in-memory
arrays and is a ``keras.utils.PyDataset``, so it plugs straight into
``model.fit``::

    sampler = MultiShotMemorySampler(x, y, classes_per_batch=10,
                                     examples_per_class_per_batch=4,
                                     steps_per_epoch=200, seed=0)
    model.fit(sampler, epochs=3)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from simdex._optional import import_keras
from simdex._validate import as_labels, check_int, check_positive_int

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()

__all__ = [
    "MultiShotMemorySampler",
    "Sampler",
    "SingleShotMemorySampler",
    "TFDatasetMultiShotMemorySampler",
    "select_examples",
]

# Keywords keras.utils.PyDataset takes; anything else is a mistake in *our* call.
_PYDATASET_KWARGS = frozenset({"workers", "use_multiprocessing", "max_queue_size"})


def _positive_int(name: str, value: Any) -> int:
    return check_positive_int(value, name)


def _check_kwargs(owner: str, kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(kwargs) - _PYDATASET_KWARGS)
    if unknown:
        raise TypeError(
            f"{owner}() got unexpected keyword arguments {unknown}; besides its own arguments it "
            f"accepts only {sorted(_PYDATASET_KWARGS)} (for keras.utils.PyDataset)"
        )


def _augmenter_arity(augmenter: Callable[..., Any]) -> int:
    """Positional parameters the augmenter takes (TF Similarity's take 4, ours 2 or 1)."""
    import inspect

    try:
        params = inspect.signature(augmenter).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return 2
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 4
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class Sampler(keras.utils.PyDataset):
    """Base class of simdex samplers: a ``PyDataset`` of ``(x, y)`` batches.

    Subclasses implement ``__len__`` and :meth:`generate_batch`. An unknown
    keyword argument raises a ``TypeError`` naming the sampler class (not
    Keras' ``PyDataset``).

    Warmup (TF Similarity's ``warmup``): for the first ``warmup`` epochs
    :attr:`is_warmup` is True and an augmenter taking four arguments is called
    as ``augmenter(x, y, examples_per_class, is_warmup)``.
    """

    def __init__(self, warmup: int = -1, **kwargs: Any) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(**kwargs)
        self.warmup = check_int(warmup, "warmup")  # epochs; -1 for none
        self._epoch = 0

    @property
    def is_warmup(self) -> bool:
        """True during the first ``warmup`` epochs."""
        return self.warmup > 0 and self._epoch < self.warmup

    def generate_batch(self, batch_id: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """Batch ``batch_id`` of the current epoch (TF Similarity's name)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` as ``(x, y)``."""
        index = check_int(index, "batch index")
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range [0, {len(self)})")
        return self.generate_batch(index)

    def on_epoch_end(self) -> None:
        """Move to the next epoch's batches."""
        self._epoch += 1

    def summary(self) -> str:  # pragma: no cover - overridden
        return repr(self)


def select_examples(
    x: Any, y: Any, class_list: Sequence[int] | None = None, num_examples_per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The examples of ``class_list`` (all classes by default), at most ``num_examples_per_class`` each.

    TF Similarity's ``select_examples``: keeps the first examples of each class,
    in their original order.

    Returns:
        ``(x_selected, y_selected)``.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or x.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got shapes {x.shape} and {y.shape}")
    rows, _ = _select_rows(y.astype(np.int64), class_list, num_examples_per_class)
    return x[rows], y[rows]


def _select_rows(
    y: np.ndarray, class_list: Sequence[int] | None, total_examples_per_class: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``y`` to sample from, and the classes.

    Args:
        y: ``(n,)`` int64 labels.
        class_list: Classes to keep (default: all in ``y``).
        total_examples_per_class: Keep at most this many examples of each
            class (the first ones, in order), or None for all.

    Returns:
        ``(rows, classes)``: sorted int64 row numbers and the sorted classes.

    Raises:
        ValueError: empty or unknown ``class_list``; bad ``total_examples_per_class``.
    """
    present = np.unique(y)
    if class_list is None:
        classes = present
    else:
        classes = np.asarray(list(class_list))
        if classes.size == 0:
            raise ValueError("class_list is empty")
        if not np.issubdtype(classes.dtype, np.integer):
            raise TypeError(f"class_list must hold integer labels, got dtype {classes.dtype}")
        unknown = np.setdiff1d(classes, present)
        if unknown.size:
            raise ValueError(f"class_list has classes not present in y: {unknown.tolist()}")
        classes = np.unique(classes)
    keep = np.isin(y, classes)
    if total_examples_per_class is not None:
        cap = _positive_int("total_examples_per_class", total_examples_per_class)
        # rank of each row within its class (0, 1, 2... in order of appearance)
        order = np.argsort(y, kind="stable")
        ys = y[order]
        starts = np.searchsorted(ys, ys, side="left")
        rank = np.empty_like(order)
        rank[order] = np.arange(y.size) - starts
        keep &= rank < cap
    return np.flatnonzero(keep), classes


class MultiShotMemorySampler(Sampler):
    """Balanced batches drawn from arrays held in memory.

    Each batch holds ``classes_per_batch`` distinct classes, each with
    ``examples_per_class_per_batch`` examples, so its size is their product.
    Classes are drawn without replacement within a batch; examples of a class
    are drawn without replacement when the class has enough of them, and
    **with replacement** when it has fewer than ``examples_per_class_per_batch``
    (so a class with a single example still yields a positive pair, made of two
    copies; no error is raised).

    Batches are reproducible: batch ``i`` of epoch ``e`` depends only on
    ``(seed, e, i)``, so the sampler is safe with Keras workers.

    Args:
        x: Examples, array-like ``(n, ...)``.
        y: Integer class labels, array-like ``(n,)`` (or ``(n, 1)``).
        classes_per_batch: Distinct classes per batch (``<=`` number of classes used).
        examples_per_class_per_batch: Examples per class per batch (>= 1; use
            >= 2 for pair losses).
        class_list: Classes to sample from (default: all classes in ``y``).
        steps_per_epoch: Batches per epoch (the ``len`` of the dataset).
        augmenter: Optional ``callable(x_batch, y_batch) -> (x_batch, y_batch)``
            applied to every batch, or TF Similarity's four-argument form
            ``callable(x, y, examples_per_class, is_warmup)``.
        seed: Seed of the batch generator.
        total_examples_per_class: Keep only the first this-many examples of
            each class (TF Similarity's argument); None keeps all.
        warmup: Epochs during which :attr:`is_warmup` is True (-1: none).
        verbose: 1 prints :meth:`summary` (TF Similarity prints it always).
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` for
            ``keras.utils.PyDataset``; anything else is a ``TypeError``.

    Raises:
        ValueError: ``x``/``y`` lengths differ, ``y`` is not 1-D, a class in
            ``class_list`` does not occur in ``y``, or ``classes_per_batch``
            exceeds the number of classes.
        TypeError: non-integer labels or counts, or an augmenter that is not callable.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        classes_per_batch: int,
        examples_per_class_per_batch: int = 2,
        class_list: Sequence[int] | None = None,
        steps_per_epoch: int = 1000,
        augmenter: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
        seed: int = 0,
        total_examples_per_class: int | None = None,
        warmup: int = -1,
        verbose: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(warmup=warmup, **kwargs)
        x = np.asarray(x)
        y = as_labels(y, "y", column_ok=True)
        if x.ndim == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same length, got {x.shape[:1]} and {y.shape[0]}")
        if y.shape[0] == 0:
            raise ValueError("x and y are empty")
        self.classes_per_batch = _positive_int("classes_per_batch", classes_per_batch)
        self.examples_per_class_per_batch = _positive_int(
            "examples_per_class_per_batch", examples_per_class_per_batch
        )
        self.steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
        if augmenter is not None and not callable(augmenter):
            raise TypeError(f"augmenter must be callable, got {type(augmenter).__name__}")
        self.augmenter = augmenter
        self.seed = check_int(seed, "seed")

        rows, classes = _select_rows(y, class_list, total_examples_per_class)
        if self.classes_per_batch > classes.size:
            raise ValueError(
                f"classes_per_batch={self.classes_per_batch} exceeds the {classes.size} available classes"
            )
        self.total_examples_per_class = (
            None if total_examples_per_class is None else int(total_examples_per_class)
        )
        self._positions = rows  # rows of x/y used, in original order
        self.x = x
        self.y = y
        self.class_list = classes
        self._by_class = [rows[y[rows] == c] for c in classes]
        self._augmenter_arity = 0 if augmenter is None else _augmenter_arity(augmenter)
        if verbose:
            print(self.summary())

    def summary(self) -> str:
        """What the sampler draws: classes, examples, batch size, steps (TF Similarity prints this)."""
        sizes = np.array([c.size for c in self._by_class])
        aug = (
            "none"
            if self.augmenter is None
            else getattr(self.augmenter, "__name__", type(self.augmenter).__name__)
        )
        return "\n".join(
            [
                f"{type(self).__name__}: {self.class_list.size} classes, {self.num_examples} examples "
                f"(per class: min {sizes.min()}, max {sizes.max()})",
                f"  batch size {self.batch_size} = {self.classes_per_batch} classes x "
                f"{self.examples_per_class_per_batch} examples per class; "
                f"{self.steps_per_epoch} steps per epoch",
                f"  augmenter: {aug}; warmup epochs: {max(self.warmup, 0)}",
            ]
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(classes={self.class_list.size}, examples={self.num_examples}, "
            f"classes_per_batch={self.classes_per_batch}, "
            f"examples_per_class_per_batch={self.examples_per_class_per_batch}, "
            f"steps_per_epoch={self.steps_per_epoch})"
        )

    @property
    def batch_size(self) -> int:
        """Examples per batch: ``classes_per_batch * examples_per_class_per_batch``."""
        return self.classes_per_batch * self.examples_per_class_per_batch

    @property
    def num_examples(self) -> int:
        """Number of examples of the sampled classes."""
        return int(self._positions.size)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _batch_indices(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self._epoch, index])
        chosen = rng.choice(len(self._by_class), size=self.classes_per_batch, replace=False)
        e = self.examples_per_class_per_batch
        parts = [rng.choice(self._by_class[c], size=e, replace=self._by_class[c].size < e) for c in chosen]
        return np.concatenate(parts)

    def generate_batch(self, batch_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``batch_id`` as ``(x, y)``: ``(batch_size, ...)`` and ``(batch_size,)`` int64.

        TF Similarity's name; ``sampler[i]`` is the same for ``0 <= i < len(sampler)``,
        and any ``batch_id >= 0`` gives a reproducible batch.
        """
        batch_id = check_int(batch_id, "batch_id", low=0)
        rows = self._batch_indices(batch_id)
        xb, yb = self.x[rows], self.y[rows]
        if self.augmenter is not None:
            if self._augmenter_arity >= 4:
                xb, yb = self.augmenter(xb, yb, self.examples_per_class_per_batch, self.is_warmup)
            else:
                xb, yb = self.augmenter(xb, yb)
        return xb, yb

    def get_slice(self, begin: int = 0, size: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """A contiguous slice of the examples of the sampled classes (original order).

        Args:
            begin: First position (0-based) among those examples.
            size: Number of examples; ``-1`` means "to the end". The slice is
                cut short at the end of the data.

        Returns:
            ``(x, y)`` with ``min(size, num_examples - begin)`` rows (not augmented).

        Raises:
            ValueError: ``begin`` outside ``[0, num_examples)`` or ``size`` is 0 or < -1.
        """
        begin, size = check_int(begin, "begin"), check_int(size, "size")
        if not 0 <= begin < self.num_examples:
            raise ValueError(f"begin={begin} is outside [0, {self.num_examples})")
        if size == 0 or size < -1:
            raise ValueError(f"size must be positive or -1, got {size}")
        end = self.num_examples if size == -1 else min(begin + size, self.num_examples)
        rows = self._positions[begin:end]
        return self.x[rows], self.y[rows]


class SingleShotMemorySampler(Sampler):
    """Batches of augmented views of single examples (self-supervised / one-shot).

    Each batch draws ``examples_per_batch`` distinct examples and makes
    ``num_augmentations_per_example`` views of each with ``augmenter``; the
    label of a view is the position of its example in ``x``, so views of the
    same example are positives of each other. Batch size is
    ``examples_per_batch * num_augmentations_per_example``.

    Args:
        x: Examples, array-like ``(n, ...)``.
        augmenter: ``callable(x_batch) -> x_batch`` returning one random view of
            each row (called once per view), or TF Similarity's form
            ``callable(x, y, num_augmentations_per_example, is_warmup) -> (x, y)``
            which makes all the views at once. None repeats the examples
            unchanged.
        examples_per_batch: Distinct examples per batch.
        num_augmentations_per_example: Views per example (>= 2 for pair losses).
        steps_per_epoch: Batches per epoch.
        seed: Seed of the example draw.
        warmup: Epochs during which :attr:`is_warmup` is True (-1: none).
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size``.

    Raises:
        ValueError: empty ``x``, ``examples_per_batch`` above ``len(x)``.
        TypeError: a non-callable augmenter, an unknown keyword.
    """

    def __init__(
        self,
        x: Any,
        augmenter: Callable[..., Any] | None = None,
        examples_per_batch: int = 32,
        num_augmentations_per_example: int = 2,
        steps_per_epoch: int = 1000,
        seed: int = 0,
        warmup: int = -1,
        **kwargs: Any,
    ) -> None:
        super().__init__(warmup=warmup, **kwargs)
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"x must be a non-empty batch of examples, got shape {x.shape}")
        self.examples_per_batch = _positive_int("examples_per_batch", examples_per_batch)
        self.num_augmentations_per_example = _positive_int(
            "num_augmentations_per_example", num_augmentations_per_example
        )
        self.steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
        if self.examples_per_batch > x.shape[0]:
            raise ValueError(
                f"examples_per_batch={self.examples_per_batch} exceeds the {x.shape[0]} examples"
            )
        if augmenter is not None and not callable(augmenter):
            raise TypeError(f"augmenter must be callable, got {type(augmenter).__name__}")
        seed = check_int(seed, "seed")
        self.x = x
        self.augmenter = augmenter
        self.seed = int(seed)
        self._augmenter_arity = 0 if augmenter is None else _augmenter_arity(augmenter)

    @property
    def batch_size(self) -> int:
        """``examples_per_batch * num_augmentations_per_example``."""
        return self.examples_per_batch * self.num_augmentations_per_example

    def __len__(self) -> int:
        return self.steps_per_epoch

    def generate_batch(self, batch_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of batch ``batch_id``: ``x`` ``(batch_size, ...)``, ``y`` ``(batch_size,)`` int64
        (example positions; the views of an example are consecutive blocks of
        ``examples_per_batch`` rows apart)."""
        batch_id = check_int(batch_id, "batch_id", low=0)
        rng = np.random.default_rng([self.seed, self._epoch, batch_id])
        rows = rng.choice(self.x.shape[0], size=self.examples_per_batch, replace=False)
        xb, yb = self.x[rows], rows.astype(np.int64)
        a = self.num_augmentations_per_example
        if self.augmenter is not None and self._augmenter_arity >= 4:
            out_x, out_y = self.augmenter(xb, yb, a, self.is_warmup)
            return np.asarray(out_x), np.asarray(out_y, dtype=np.int64)
        views = [xb if self.augmenter is None else np.asarray(self.augmenter(xb)) for _ in range(a)]
        return np.concatenate(views), np.tile(yb, a)

    def summary(self) -> str:
        """One-line description."""
        return (
            f"{type(self).__name__}: {self.x.shape[0]} examples; batch size {self.batch_size} = "
            f"{self.examples_per_batch} examples x {self.num_augmentations_per_example} views; "
            f"{self.steps_per_epoch} steps per epoch"
        )


class TFDatasetMultiShotMemorySampler(MultiShotMemorySampler):
    """:class:`MultiShotMemorySampler` over a ``tf.data.Dataset`` or TFRecord files.

    The data are read once into memory (nothing is downloaded: TF Similarity's
    version loads TensorFlow Datasets by name, which needs the network; pass
    the dataset or the files instead).

    Args:
        dataset: A ``tf.data.Dataset`` of ``(x, y)`` pairs or of dicts with
            ``x_key``/``y_key``; or a path or list of paths of TFRecord files
            (then ``feature_description`` or ``parse_fn`` says how to read them).
        classes_per_batch: Distinct classes per batch.
        x_key, y_key: Keys of the example and the label in dict elements.
        feature_description: For TFRecord files: a ``tf.io.parse_single_example``
            feature dict; ``x_key`` may hold a serialised tensor (``tf.string``,
            decoded with ``tf.io.parse_tensor`` as ``x_dtype``) or a fixed-length
            feature.
        parse_fn: For TFRecord files: ``callable(serialized) -> (x, y)``
            instead of ``feature_description``.
        x_dtype: dtype of tensors stored as serialised ``tf.string``.
        preprocess_fn: Optional ``callable(x, y) -> (x, y)`` applied per element
            (inside ``tf.data``) before reading into memory.
        **kwargs: The arguments of :class:`MultiShotMemorySampler`
            (``examples_per_class_per_batch``, ``class_list``,
            ``total_examples_per_class``, ``steps_per_epoch``, ``augmenter``,
            ``warmup``, ``seed``...).

    Raises:
        ValueError: a dataset name (would need a download), an empty dataset,
            elements of an unknown structure.
        TypeError: an unknown keyword.
    """

    def __init__(
        self,
        dataset: Any,
        classes_per_batch: int = 2,
        x_key: str = "image",
        y_key: str = "label",
        feature_description: dict[str, Any] | None = None,
        parse_fn: Callable[[Any], Any] | None = None,
        x_dtype: str = "float32",
        preprocess_fn: Callable[[Any, Any], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        import tensorflow as tf

        if "dataset_name" in kwargs:
            raise ValueError(
                f"dataset_name={kwargs['dataset_name']!r}: loading TensorFlow Datasets by name needs a "
                "download, which simdex does not do; pass a tf.data.Dataset or TFRecord files as `dataset`"
            )
        ds = self._as_dataset(tf, dataset, feature_description, parse_fn, x_key, y_key, x_dtype)
        if preprocess_fn is not None:
            ds = ds.map(preprocess_fn)
        xs, ys = [], []
        for x, y in ds.as_numpy_iterator():
            xs.append(np.asarray(x))
            ys.append(np.asarray(y).reshape(-1)[0] if np.ndim(y) else y)
        if not xs:
            raise ValueError("the dataset is empty")
        super().__init__(np.stack(xs), np.asarray(ys), classes_per_batch, **kwargs)

    @staticmethod
    def _as_dataset(
        tf: Any,
        dataset: Any,
        feature_description: dict[str, Any] | None,
        parse_fn: Callable[[Any], Any] | None,
        x_key: str,
        y_key: str,
        x_dtype: str,
    ) -> Any:
        import os

        if isinstance(dataset, tf.data.Dataset):
            ds = dataset
        else:
            paths = [dataset] if isinstance(dataset, (str, os.PathLike)) else list(dataset)
            paths = [os.fspath(p) for p in paths]
            missing = [p for p in paths if not os.path.exists(p)]
            if missing:
                raise ValueError(
                    f"no such TFRecord file(s) {missing[:3]}; TF Similarity's dataset names (TensorFlow "
                    "Datasets) need a download, which simdex does not do: pass a tf.data.Dataset or files"
                )
            if parse_fn is None and feature_description is None:
                raise ValueError("reading TFRecord files needs feature_description or parse_fn")
            ds = tf.data.TFRecordDataset(paths)
            if parse_fn is not None:
                return ds.map(parse_fn)

            def parse(serialized: Any) -> Any:
                ex = tf.io.parse_single_example(serialized, feature_description)
                x = ex[x_key]
                if x.dtype == tf.string:
                    x = tf.io.parse_tensor(x, out_type=tf.dtypes.as_dtype(x_dtype))
                return x, ex[y_key]

            return ds.map(parse)
        spec = ds.element_spec
        if isinstance(spec, dict):
            if x_key not in spec or y_key not in spec:
                raise ValueError(
                    f"dataset elements have keys {sorted(spec)}; set x_key/y_key (got {x_key!r}, {y_key!r})"
                )
            return ds.map(lambda e: (e[x_key], e[y_key]))
        if isinstance(spec, tuple) and len(spec) == 2:
            return ds
        raise ValueError(f"dataset elements must be (x, y) pairs or dicts, got {spec}")
