"""Similarity learning on Keras 3: layers, metric losses, samplers and :class:`SimilarityModel`.

Modules (each imports Keras on first use; ``import simdex`` does not):

* :mod:`simdex.learn.layers`: ``MetricEmbedding``, ``L2Normalize``.
* :mod:`simdex.learn.losses`: metric losses (triplet, multi-similarity, circle, ArcFace...).
* :mod:`simdex.learn.samplers`: balanced batch samplers.
* :mod:`simdex.learn.models`: ``SimilarityModel`` (an embedding model holding an index).

The public faces ``simdex.layers``, ``simdex.losses``, ``simdex.samplers`` and
``simdex.models`` are these modules.
"""
