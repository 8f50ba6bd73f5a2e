"""`coin-scale render`: render a balanced probe set of synthetic scenes with ground truth.

Writes DIR/images/*.png, DIR/scenes.jsonl and, last, DIR/attributes.parquet (image_path plus one
column per attribute); the same --seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from coin_scale.errors import ResourceError, UserError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `render` subcommand."""
    parser = subparsers.add_parser(
        "render",
        help="render a probe set of synthetic scenes with known attributes",
        description=(
            "Sample N scenes so that every attribute value (shape, color, texture, background, "
            "size, position, n_objects, light) is equally represented, render them with the "
            "procedural renderer and write DIR/images/*.png, DIR/scenes.jsonl and "
            "DIR/attributes.parquet."
        ),
    )
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="rendering processes (default 1); output is identical",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty DIR that is not a probe set made with the same flags",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render the probe set; bad flags or an unusable --out become a one-line `UserError`."""
    from unity_pool.probeset import ProbeSetError, ProbeSetParams, write_probe_set

    if args.n <= 0:
        raise UserError(f"--n: expected a number of images >= 1; got {args.n}. Fix: pass --n 1000.")
    if args.workers < 1:
        raise UserError(f"--workers: expected >= 1; got {args.workers}. Fix: pass --workers 1.")
    try:
        params = ProbeSetParams(n=args.n, seed=args.seed, size=args.size)
        info = write_probe_set(
            args.out,
            params,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except ProbeSetError as err:
        raise UserError(str(err)) from err
    except OSError as err:
        raise ResourceError(
            f"cannot write the probe set to {args.out}: {err}. Fix: choose a writable --out."
        ) from err
    log.info("probe set ready: %s (%d images, %.1fs)", info.root, info.n, info.seconds)
    return 0
