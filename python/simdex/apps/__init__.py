"""Applications built on the layers below: near-duplicate search (:mod:`simdex.apps.neardup`),
an index sharded over Ray actors (:mod:`simdex.apps.distributed`) and the HTTP service
(:mod:`simdex.apps.service`).

An application may import from every other simdex package; nothing imports from here.
"""
