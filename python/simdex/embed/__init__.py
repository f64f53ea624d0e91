"""Embedding models: Keras embedders and batched embedding, ONNX export and TensorRT.

* :mod:`simdex.embed.embeddings`: the ``Embedder`` protocol, ``small_cnn``,
  ``from_backbone``, ``embed`` (batched, compiled forward pass).
* :mod:`simdex.embed.export`: ``export_onnx``, ``OnnxEmbedder``, ``convert_tensorrt``.

The public faces ``simdex.embeddings`` and ``simdex.export`` are these modules.
"""
