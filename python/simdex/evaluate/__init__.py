"""Evaluation of neighbours: matchers, retrieval and classification metrics, calibration, plots.

* :mod:`simdex.evaluate.matchers`: neighbours' labels -> a predicted label and distance.
* :mod:`simdex.evaluate.metrics`: retrieval (recall@k, precision@k, mAP...) and
  thresholded classification metrics.
* :mod:`simdex.evaluate.calibration`: distance thresholds chosen from labelled data.
* :mod:`simdex.evaluate.plots`: matplotlib figures of the above.

NumPy only (plots need matplotlib); no Keras, no index. The public faces
``simdex.metrics``, ``simdex.plots`` (also ``simdex.visualization``),
``simdex.calibration`` and ``simdex.matchers`` are these modules.
"""
