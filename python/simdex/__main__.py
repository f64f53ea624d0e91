"""``python -m simdex COMMAND``: the command-line entry point (``simdex`` console script).

Commands:
    serve   serve a saved index over HTTP (``simdex serve --help``)
"""

from __future__ import annotations

import sys

_COMMANDS = {"serve": "serve a saved index over HTTP (needs simdex[serve])"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in _COMMANDS:
        lines = [f"  {name:8s}{text}" for name, text in _COMMANDS.items()]
        out = sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr
        if argv and argv[0] not in ("-h", "--help"):
            print(f"simdex: unknown command {argv[0]!r}", file=out)
        print("usage: simdex COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines), file=out)
        return 0 if out is sys.stdout else 2
    if argv[0] == "serve":
        from simdex.apps.service.cli import main as serve

        return serve(argv[1:], prog="simdex serve")
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
