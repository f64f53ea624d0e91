"""Keras callbacks for similarity learning: :class:`EvalCallback` (TF Similarity's name).

At the end of every epoch :class:`EvalCallback` embeds a held-out split with
the model being trained, indexes the *targets* in a private exact index (the
model's own index is left alone), looks up the *queries*, and writes into
Keras' ``logs``

* retrieval metrics (``recall@1``, ``map@r``... see
  :func:`simdex.metrics.evaluate_retrieval`), and
* classification metrics at the calibrated optimal distance threshold
  (``f1``, ``binary_accuracy``, ``precision``... see :func:`simdex.calibrate`),
  plus that threshold as ``distance``,

each under ``prefix`` (default ``"val_"``). ``History``, ``TensorBoard`` and
``EarlyStopping`` see them like any other metric::

    cb = EvalCallback(x_query, y_query, x_target, y_target, retrieval_metrics=["recall@1"])
    history = model.fit(sampler, epochs=5, callbacks=[cb])
    history.history["val_recall@1"], history.history["val_f1"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from simdex._optional import import_keras
from simdex._validate import canonical_metric, check_positive_int

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()

__all__ = ["EvalCallback"]


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n,):
        raise ValueError(f"{name} must be ({n},) labels, got shape {arr.shape}")
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise TypeError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr.astype(np.int64)


class EvalCallback(keras.callbacks.Callback):
    """Retrieval and calibrated classification metrics on a held-out split, each epoch.

    Args:
        queries: ``(q, *input_shape)`` query examples.
        query_labels: ``(q,)`` int labels.
        targets: ``(t, *input_shape)`` examples to index (the "gallery").
        target_labels: ``(t,)`` int labels.
        distance: Metric of the private index (default: the model's
            ``distance`` for a :class:`simdex.SimilarityModel`, else ``"cosine"``).
        metrics: Classification metrics logged at the calibrated optimal
            threshold (TF Similarity's default ``["binary_accuracy", "f1"]``).
        k: Neighbours the matcher sees.
        matcher: Matcher name/config/instance.
        calibration_metric: Metric the threshold optimises.
        retrieval_metrics: Retrieval metric names or
            :mod:`simdex.retrieval_metrics` objects (default ``["recall@1",
            "map@r"]``); ``[]`` for none.
        known_classes: If given, queries of other classes are "unknown" (label
            -1): the right answer for them is no match.
        distance_thresholds: TF Similarity's argument: log the classification
            metrics at these fixed distances (``"f1"`` for one threshold,
            ``"f1@0.3"``... for several) instead of at the calibrated optimum.
        tb_logdir: Also write the metrics as TensorBoard scalars there (needs the
            ``tensorboard`` package). A ``keras.callbacks.TensorBoard`` placed
            after this callback in ``callbacks=[...]`` records them too.
        prefix: Prefix of the log keys.
        every: Evaluate every this many epochs (others log nothing new).
        batch_size: Rows per model call.
        verbose: 1 prints the metrics each evaluation.

    Raises:
        ValueError: shapes or lengths that do not match, empty splits.
    """

    def __init__(
        self,
        queries: Any,
        query_labels: Any,
        targets: Any,
        target_labels: Any,
        distance: str | None = None,
        metrics: Sequence[str] = ("binary_accuracy", "f1"),
        k: int = 1,
        matcher: Any = "match_nearest",
        calibration_metric: str = "f1",
        retrieval_metrics: Sequence[Any] | None = None,
        known_classes: Sequence[int] | None = None,
        distance_thresholds: Sequence[float] | None = None,
        tb_logdir: str | None = None,
        prefix: str = "val_",
        every: int = 1,
        batch_size: int = 256,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        from simdex.evaluate import retrieval_metrics as _rm

        self.queries = np.asarray(queries)
        self.targets = np.asarray(targets)
        if self.queries.ndim == 0 or self.queries.shape[0] == 0:
            raise ValueError("queries is empty")
        if self.targets.ndim == 0 or self.targets.shape[0] == 0:
            raise ValueError("targets is empty")
        if self.queries.shape[1:] != self.targets.shape[1:]:
            raise ValueError(f"queries {self.queries.shape} and targets {self.targets.shape} differ in shape")
        self.query_labels = _labels(query_labels, self.queries.shape[0], "query_labels")
        self.target_labels = _labels(target_labels, self.targets.shape[0], "target_labels")
        if known_classes is not None:
            known = np.isin(self.query_labels, np.asarray(list(known_classes)))
            self.query_labels = np.where(known, self.query_labels, -1)
        self.distance = None if distance is None else canonical_metric(distance)
        if distance_thresholds is None:
            self.distance_thresholds = None
        else:
            t = np.atleast_1d(np.asarray(distance_thresholds, dtype=np.float64))
            if t.ndim != 1 or t.size == 0 or np.isnan(t).any():
                raise ValueError(f"distance_thresholds must be a non-empty 1-D list of numbers, got {t}")
            self.distance_thresholds = t
        self.metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        self.k = check_positive_int(k, "k")
        self.matcher = matcher
        self.calibration_metric = calibration_metric
        names = ["recall@1", "map@r"] if retrieval_metrics is None else retrieval_metrics
        self.retrieval_metrics = _rm.metric_names(names) if len(names) else []
        self.retrieval_k = max([self.k, *(_rm.cutoff(nm) for nm in self.retrieval_metrics)])
        counts = dict(zip(*np.unique(self.target_labels, return_counts=True)))
        self._num_relevant = np.array([counts.get(v, 0) for v in self.query_labels.tolist()], np.int64)
        if any(nm in ("map@r", "r_precision") for nm in self.retrieval_metrics):
            self.retrieval_k = max(self.retrieval_k, int(max(counts.values())))
        self.retrieval_k = min(self.retrieval_k, self.targets.shape[0])
        if tb_logdir is not None:
            try:
                import tensorboard  # noqa: F401  (tf.summary needs it)
            except ImportError as e:
                raise ImportError(
                    "EvalCallback(tb_logdir=...) needs TensorBoard: pip install tensorboard (or leave "
                    "tb_logdir unset and put keras.callbacks.TensorBoard after this callback)"
                ) from e
        self.tb_logdir = tb_logdir
        self.prefix = str(prefix)
        self.every = check_positive_int(every, "every")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.verbose = int(verbose)
        self._writer: Any = None
        self.results: list[dict[str, float]] = []

    def _embed(self, x: np.ndarray) -> np.ndarray:
        embed = getattr(self.model, "embed", None)
        if callable(embed):
            return np.asarray(embed(x, batch_size=self.batch_size), dtype=np.float32)
        return np.asarray(self.model.predict(x, batch_size=self.batch_size, verbose=0), dtype=np.float32)

    def evaluate(self) -> dict[str, float]:
        """Compute the metrics now (what :meth:`on_epoch_end` logs, without the prefix)."""
        from simdex.evaluate import calibration
        from simdex.evaluate import metrics as _metrics
        from simdex.index.exact import ExactIndex

        distance = str(self.distance or getattr(self.model, "distance", None) or "cosine")
        t_emb = self._embed(self.targets)
        q_emb = self._embed(self.queries)
        index = ExactIndex(t_emb.shape[1], metric=distance)
        index.add(t_emb)
        D, ids = index.search(q_emb, self.retrieval_k)
        ids = np.asarray(ids, dtype=np.int64)
        nl = np.where(ids >= 0, self.target_labels[np.clip(ids, 0, None)], -1)
        out: dict[str, float] = {}
        if self.retrieval_metrics and (self._num_relevant > 0).any():
            out.update(
                _metrics.evaluate_retrieval(
                    self.query_labels,
                    nl,
                    k=self.retrieval_k,
                    metrics=self.retrieval_metrics,
                    num_relevant=self._num_relevant,
                )
            )
        if self.distance_thresholds is not None:  # TF Similarity's fixed thresholds instead of calibrating
            fixed = _metrics.evaluate_classification(
                self.query_labels,
                nl,
                np.asarray(D, dtype=np.float64),
                thresholds=self.distance_thresholds,
                k=self.k,
                matcher=self.matcher,
                metrics=self.metrics,
            )
            single = len(self.distance_thresholds) == 1
            for m in self.metrics:
                for t, v in zip(self.distance_thresholds.tolist(), fixed[m].tolist()):
                    out[m if single else f"{m}@{t:g}"] = float(v)
            return out
        try:
            cal = calibration.calibrate(
                np.asarray(D, dtype=np.float64),
                nl,
                self.query_labels,
                calibration_metric=self.calibration_metric,
                k=self.k,
                matcher=self.matcher,
                extra_metrics=self.metrics,
                rounding=None,
            )
        except ValueError:  # every match wrong (an untrained model can do that): nothing to calibrate
            out.update({m: 0.0 for m in self.metrics})
        else:
            opt = cal.cutpoints["optimal"]
            out["distance"] = float(opt["distance"])
            for m in self.metrics:
                out[m] = float(opt[_metrics.classification_metric_info(m)["name"]])
        return out

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        results = self.evaluate()
        self.results.append(results)
        if logs is not None:
            for name, value in results.items():
                logs[f"{self.prefix}{name}"] = value
        if self.verbose:
            print(" - ".join(f"{self.prefix}{n}: {v:.4f}" for n, v in results.items()))
        if self.tb_logdir is not None:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.tb_logdir)
            with self._writer.as_default():
                for name, value in results.items():
                    tf.summary.scalar(f"{self.prefix}{name}", value, step=epoch)
            self._writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
