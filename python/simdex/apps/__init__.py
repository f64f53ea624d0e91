"""Applications built on the layers below: near-duplicate search (:mod:`simdex.apps.neardup`)
and an index sharded over Ray actors (:mod:`simdex.apps.distributed`).

An application may import from every other simdex package; nothing imports from here.
"""
