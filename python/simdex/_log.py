"""The ``simdex`` logger: libraries log, they do not print.

Every module logs through ``logging.getLogger("simdex")`` (or a child), which has a
``NullHandler``: nothing appears unless the application configures logging, e.g.
``logging.basicConfig(level=logging.INFO)``. Output on stdout happens only where a
caller asked for it (``verbose=1`` arguments, progress bars).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("simdex")
logger.addHandler(logging.NullHandler())

__all__ = ["logger"]
