"""`python -m unity_pool.diffusion --port P [--config configs/diffusion.yaml]`: serve diffusers
pipelines over the render protocol on 127.0.0.1.

Loads every configured pipeline first (a missing model is one line on stderr and exit status 4),
then prints `READY <port>` as the first line on stdout once listening (port 0 picks a free
port), logs to stderr, and stops cleanly on SIGTERM or Ctrl-C. Exit status 2: bad flags or
config; 3: cannot bind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any

from unity_pool.diffusion.backend import DiffusionBackend
from unity_pool.diffusion.config import (
    DEVICE_CHOICES,
    DiffusionConfig,
    config_from_dict,
    load_config,
)
from unity_pool.diffusion.loading import ModelNotAvailable
from unity_pool.diffusion.server import DiffusionServer
from unity_pool.server import serve_until_stopped

log = logging.getLogger("unity_pool.diffusion")

EXIT_MODEL_NOT_AVAILABLE = 4
"""Exit status when a configured model cannot be loaded from the local folders or cache."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unity_pool.diffusion",
        description="Serve diffusers text-to-image and edit pipelines over the render protocol.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--config",
        default=None,
        help="YAML config (e.g. configs/diffusion.yaml); default: built-in",
    )
    parser.add_argument(
        "--config-json",
        default=None,
        help="the config as one JSON object (what a render pool passes its workers, which may "
        "run on other machines); not with --config",
    )
    parser.add_argument(
        "--device", default=None, help=f"overrides `device`: {', '.join(DEVICE_CHOICES)}, cuda:N"
    )
    parser.add_argument(
        "--allow-downloads",
        action="store_true",
        help="overrides `allow_downloads`: fetch missing models from the Hugging Face hub",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _config(args: argparse.Namespace) -> DiffusionConfig:
    if args.config and args.config_json:
        raise ValueError("give --config or --config-json, not both")
    if args.config_json:
        try:
            data = json.loads(args.config_json)
        except json.JSONDecodeError as err:
            raise ValueError(f"--config-json: not JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"--config-json: expected a JSON object; got {data!r:.100}")
        config = config_from_dict(data)
    else:
        config = load_config(args.config) if args.config else DiffusionConfig()
    changes: dict[str, Any] = {}
    if args.device is not None:
        changes["device"] = args.device
    if args.allow_downloads:
        changes["allow_downloads"] = True
    return dataclasses.replace(config, **changes) if changes else config


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
    try:
        backend = DiffusionBackend(_config(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # the console is ours: no loading bars
    try:
        backend.load()
    except ModelNotAvailable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_MODEL_NOT_AVAILABLE
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    description = (
        f"diffusion server ({backend.placement.device}, {backend.placement.dtype}; "
        f"ops: {', '.join(backend.ops)})"
    )
    return serve_until_stopped(
        lambda: DiffusionServer(backend, args.host, args.port),
        host=args.host, port=args.port, description=description,
    )  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
