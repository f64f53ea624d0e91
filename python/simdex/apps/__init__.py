"""Applications built on the layers below: near-duplicate search (:mod:`simdex.apps.neardup`).

An application may import from every other simdex package; nothing imports from here.
"""
