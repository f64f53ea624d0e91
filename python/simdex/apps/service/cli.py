"""``simdex serve``: serve a saved index over HTTP.

Usage::

    simdex serve PATH [--wal DIR] [--host 127.0.0.1] [--port 8000] [--api-key-file FILE]
                      [--batch-window-ms 1] [--no-batching] [--model MODEL]

``--model`` loads a saved SimilarityModel and adds ``POST /lookup``: raw inputs are
embedded by the model and searched in ``PATH``'s index (which must hold vectors of the
model's embedding dimension, e.g. ``model.embed(x)`` added by id).

``PATH`` is a file written by ``Index.save`` (or a service snapshot). With ``--wal DIR`` writes are durable
(write-ahead log + snapshots in ``DIR``; ``PATH`` is read only while ``DIR`` holds no
snapshot yet); without it writes live in memory until ``POST /snapshot`` saves them to
``PATH`` (as a service snapshot: index, labels, payloads). The server binds 127.0.0.1
unless ``--host`` says otherwise, and prints
``simdex serve: listening on http://HOST:PORT`` to stderr once it accepts connections.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

__all__ = ["main", "build_parser"]


def build_parser(prog: str = "simdex serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Serve a saved simdex index over HTTP.")
    p.add_argument("path", help="index file written by Index.save")
    p.add_argument(
        "--wal", metavar="DIR", help="data directory for the write-ahead log and snapshots (durable)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one; default 8000)")
    p.add_argument("--api-key-file", metavar="FILE", help="file holding the API key clients must send")
    p.add_argument("--batch-window-ms", type=float, default=1.0, help="micro-batching window (default 1 ms)")
    p.add_argument("--no-batching", action="store_true", help="one native search call per request")
    p.add_argument("--max-batch", type=int, default=256, help="most query rows per native call")
    p.add_argument("--no-fsync", action="store_true", help="skip fsync (voids the durability guarantee)")
    p.add_argument("--switch-interval-ms", type=float, default=1.0, help="GIL switch interval (default 1 ms)")
    p.add_argument(
        "--model", help="a saved SimilarityModel: adds POST /lookup on raw inputs (needs simdex[tf])"
    )
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    return p


def main(argv: list[str] | None = None, prog: str = "simdex serve") -> int:
    """Run the server until interrupted; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    try:
        import uvicorn

        from simdex.apps.service import DurableCollection
        from simdex.apps.service.api import create_app
        from simdex.apps.service.durable import load_collection
    except ImportError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    api_key = None
    if args.api_key_file:
        with open(args.api_key_file, encoding="utf-8") as f:
            api_key = f.read().strip()
        if not api_key:
            print(f"{prog}: the API key file {args.api_key_file!r} is empty", file=sys.stderr)
            return 2
    if args.wal:
        base = args.path if os.path.exists(args.path) else None
        collection = DurableCollection.open(args.wal, base, fsync=not args.no_fsync)
    else:
        collection = DurableCollection(load_collection(args.path)[0], snapshot_path=args.path)
    embedder = None
    if args.model:
        from simdex.learn.models import load_model

        embedder = load_model(args.model)
    app = create_app(
        collection,
        embedder=embedder,
        api_key=api_key,
        batching=not args.no_batching,
        batch_window=args.batch_window_ms / 1e3,
        max_batch=args.max_batch,
    )
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="on")

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # printed once uvicorn accepts connections
                print(f"{prog}: listening on http://{host}:{port}", file=sys.stderr, flush=True)

    server = Server(config)
    logging.getLogger("simdex").setLevel(logging.INFO)
    # The event loop, the batcher and the writer are threads sharing the GIL; a 1 ms
    # switch interval (instead of 5 ms) keeps a thread that wakes for a short step
    # (splitting a batch, acknowledging a write) from queueing behind a busy one.
    sys.setswitchinterval(args.switch_interval_ms / 1e3)
    try:
        server.run(sockets=[sock])
    finally:
        collection.close()
        sock.close()
    return 0
