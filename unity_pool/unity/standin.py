"""A stand-in for the Unity render player: the same flags, the same stdout, the same protocol.

    python -m unity_pool.unity.standin -batchmode -logFile - -coinScalePort 0

It accepts the player's command line (`-batchmode`, `-logFile -`, `-coinScalePort N`; other
Unity flags are ignored, as Unity ignores flags it does not know), writes a few log lines the way
a player does, then `READY <port>` on stdout, and serves the render protocol with the procedural
renderer (`--renderer procedural`, the default) or solid images of the main object's colour
(`--renderer solid`). Its ping answers `backend: "unity-standin"`. So the launcher, the client and
the RenderWorker are tested against a real process without Unity.

The launcher runs an executable path; `--write-player PATH` writes one (a shell script that runs
this module with the given knobs), e.g. to point `player` in configs/unity.yaml at it.

Test knobs (not Unity flags): `--startup-delay S` waits S seconds before listening,
`--hang` never prints READY, `--exit-before-ready N` exits with status N before READY.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unity_pool import vocab
from unity_pool.scene import Scene
from unity_pool.server import Rendered, RenderServer, serve_until_stopped

log = logging.getLogger("unity_pool.unity.standin")

BACKEND_NAME = "unity-standin"
"""What the stand-in's `ping` reports as `backend` (the real player reports "unity")."""


class SolidBackend:
    """Validates the spec and answers an image filled with the main object's colour."""

    name = BACKEND_NAME

    def render(self, spec: Mapping[str, Any]) -> Rendered:
        """Render one spec; raises `SceneError` naming the field if it is invalid."""
        from PIL import Image

        from unity_pool.attributes import scene_attributes
        from unity_pool.procedural.backend import encode_png

        scene = Scene.from_dict(spec)
        image = Image.new("RGB", (scene.width, scene.height), vocab.COLOR_RGB[scene.main.color])
        return Rendered(
            image=encode_png(image),
            format="png",
            width=scene.width,
            height=scene.height,
            attributes=scene_attributes(scene),
        )


class ProceduralStandin:
    """The procedural renderer under the stand-in's name."""

    name = BACKEND_NAME

    def __init__(self) -> None:
        from unity_pool.procedural.backend import ProceduralBackend

        self._backend = ProceduralBackend()

    def render(self, spec: Mapping[str, Any]) -> Rendered:
        """Render one spec with the procedural renderer."""
        return self._backend.render(spec)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unity_pool.unity.standin",
        description="Pretend to be the CoinScale Unity player: serve the render protocol.",
        allow_abbrev=False,
    )
    unity = parser.add_argument_group("Unity player flags")
    unity.add_argument("-batchmode", action="store_true", help="accepted, as Unity does")
    unity.add_argument("-nographics", action="store_true", help="refused: cameras need a GPU")
    unity.add_argument("-logFile", metavar="PATH", help="'-': log to stdout (as Unity does)")
    unity.add_argument("-coinScalePort", type=int, default=0, metavar="N", help="0: a free port")
    unity.add_argument("-coinScaleHost", default="127.0.0.1", metavar="ADDRESS")
    parser.add_argument("--renderer", choices=("procedural", "solid"), default="procedural")
    parser.add_argument("--startup-delay", type=float, default=0.0, metavar="S")
    parser.add_argument("--hang", action="store_true", help="never print READY (tests)")
    parser.add_argument("--exit-before-ready", type=int, metavar="N", help="exit N (tests)")
    parser.add_argument(
        "--write-player", metavar="PATH", help="write an executable that runs this stand-in"
    )
    return parser


def write_player(path: str | os.PathLike[str], args: Sequence[str] = ()) -> Path:
    """Write an executable shell script at `path` that runs the stand-in with `args` plus the
    arguments it is given, in this interpreter; returns the path. Point `player` at it."""
    root = Path(__file__).resolve().parents[2]
    script = (
        "#!/bin/sh\n"
        "# coin-scale: stand-in for the Unity render player (unity_pool/unity/standin.py)\n"
        f"PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f"exec {shlex.quote(sys.executable)} -m unity_pool.unity.standin "
        f'{" ".join(shlex.quote(a) for a in args)} "$@"\n'
    )
    out = Path(path)
    out.write_text(script, "utf-8")
    out.chmod(out.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return out


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if args.write_player:
        knobs = ["--renderer", args.renderer]
        if args.startup_delay:
            knobs += ["--startup-delay", str(args.startup_delay)]
        if args.hang:
            knobs.append("--hang")
        if args.exit_before_ready is not None:
            knobs += ["--exit-before-ready", str(args.exit_before_ready)]
        print(write_player(args.write_player, knobs))
        return 0
    to_stdout = args.logFile == "-"
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s" if to_stdout else "%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout if to_stdout else sys.stderr,
    )
    # a player's log starts with lines of its own; the launcher must look past them for READY
    log.info(
        "[coin-scale] Unity stand-in starting (pid %d), renderer %s", os.getpid(), args.renderer
    )
    if unknown:
        log.info("[coin-scale] ignoring flags %s", " ".join(unknown))
    if args.nographics:
        print(
            "error: -nographics: cameras cannot render without a graphics device", file=sys.stderr
        )
        return 2
    if not 0 <= args.coinScalePort <= 65535:
        print(
            f"error: -coinScalePort: expected 0..65535; got {args.coinScalePort}", file=sys.stderr
        )
        return 2
    if args.exit_before_ready is not None:
        print("error: stand-in told to fail before READY", file=sys.stderr, flush=True)
        return int(args.exit_before_ready)
    time.sleep(args.startup_delay)
    backend = SolidBackend() if args.renderer == "solid" else ProceduralStandin()
    warm = {"version": 1, "objects": [{"shape": "circle", "color": "red"}], "width": 8}
    backend.render(warm)
    if args.hang:
        log.info("[coin-scale] --hang: listening but never printing READY")
    return serve_until_stopped(
        lambda: RenderServer(backend, args.coinScaleHost, args.coinScalePort),
        host=args.coinScaleHost, port=args.coinScalePort, description="Unity stand-in",
        announce=not args.hang,
    )  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
