"""Applications built on the layers below: near-duplicate search (:mod:`simdex.apps.neardup`)
and the HTTP service (:mod:`simdex.apps.service`).

An application may import from every other simdex package; nothing imports from here.
"""
