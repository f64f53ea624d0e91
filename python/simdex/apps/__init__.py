"""Applications built on the index: near-duplicate search, serving and scale-out (``distributed``)."""
