"""Applications built on the index: the HTTP service (``simdex.apps.service``)."""
