"""`python -m unity_pool.procedural --port P`: serve the procedural renderer on 127.0.0.1.

Prints `READY <port>` as the first line on stdout once listening (port 0 picks a free port), logs
to stderr, and stops cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys

from unity_pool.procedural.backend import ProceduralBackend
from unity_pool.server import RenderServer, serve_until_stopped

log = logging.getLogger("unity_pool.procedural")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unity_pool.procedural",
        description="Serve the procedural renderer over the unity_pool render protocol.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not 0 <= args.port <= 65535:
        print(f"error: --port: expected 0..65535; got {args.port}", file=sys.stderr)
        return 2
    backend = ProceduralBackend()
    backend.render({"version": 1, "objects": [{"shape": "circle", "color": "red"}], "width": 8})
    return serve_until_stopped(
        lambda: RenderServer(backend, args.host, args.port),
        host=args.host, port=args.port, description="procedural renderer",
    )  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
