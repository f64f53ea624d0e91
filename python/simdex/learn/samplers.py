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

__all__ = ["MultiShotMemorySampler", "Sampler"]


def _positive_int(name: str, value: Any) -> int:
    return check_positive_int(value, name)


class Sampler(keras.utils.PyDataset):
    """Base class of simdex samplers: a ``PyDataset`` of ``(x, y)`` batches.

    Subclasses implement ``__len__`` and ``__getitem__``.
    """


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
            applied to every batch.
        seed: Seed of the batch generator.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` for
            ``keras.utils.PyDataset``.

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
        augmenter: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        if self.classes_per_batch > classes.size:
            raise ValueError(
                f"classes_per_batch={self.classes_per_batch} exceeds the {classes.size} available classes"
            )
        keep = np.isin(y, classes)
        self._positions = np.flatnonzero(keep)  # rows of x/y used, in original order
        self.x = x
        self.y = y
        self.class_list = classes
        self._by_class = [np.flatnonzero(y == c) for c in classes]
        self._epoch = 0

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

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` as ``(x, y)``: ``(batch_size, ...)`` and ``(batch_size,)`` int64."""
        index = check_int(index, "batch index")
        if not 0 <= index < self.steps_per_epoch:
            raise IndexError(f"batch index {index} out of range [0, {self.steps_per_epoch})")
        rows = self._batch_indices(int(index))
        xb, yb = self.x[rows], self.y[rows]
        if self.augmenter is not None:
            xb, yb = self.augmenter(xb, yb)
        return xb, yb

    def on_epoch_end(self) -> None:
        """Move to the next epoch's batches."""
        self._epoch += 1

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
