"""simdex as a service: a FastAPI router (:func:`create_router`) to mount in your own
app, a ready app (:func:`create_app`) and the ``simdex serve`` command.

Needs ``pip install "simdex[serve]"`` (FastAPI, uvicorn, prometheus-client).

Example:
    >>> import numpy as np
    >>> from fastapi import FastAPI
    >>> from simdex.index import ExactIndex
    >>> from simdex.apps.service import create_router
    >>> index = ExactIndex(dim=4)
    >>> _ = index.add(np.eye(4))
    >>> app = FastAPI()
    >>> app.include_router(create_router(index), prefix="/similar")

Guarantees (with a data directory, ``DurableCollection.open`` or ``simdex serve --wal DIR``):
an acknowledged write survives a crash of the process or machine (its write-ahead log
record was ``fsync``'ed before the reply); an unacknowledged one is applied completely
or not at all; a rejected request (4xx) writes nothing. See
:mod:`simdex.apps.service.durable` for the full contract.
"""

from __future__ import annotations

from simdex.apps.service.durable import DurableCollection, IdConflictError, UnknownIdError
from simdex.apps.service.wal import WriteAheadLog

__all__ = [
    "DurableCollection",
    "IdConflictError",
    "UnknownIdError",
    "WriteAheadLog",
    "create_app",
    "create_router",
]


def __getattr__(name: str):  # the HTTP layer needs the serve extra: import it on first use
    if name in ("create_router", "create_app", "ServiceState"):
        from simdex.apps.service import api

        return getattr(api, name)
    raise AttributeError(f"module 'simdex.apps.service' has no attribute {name!r}")
