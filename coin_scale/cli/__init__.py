"""The `coin-scale` command: one module per subcommand, each with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from coin_scale.errors import UserError

# Subcommand modules under coin_scale.cli; each defines register(subparsers) -> None and sets
# `func(args) -> int` on its parser.
COMMANDS = (
    "layers", "dissect", "query", "compact", "bench", "render", "train_probe_cnn", "train_sae",
    "eval", "interpscore", "visualize",
)

log = logging.getLogger("coin_scale")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coin-scale",
        description="Explain what the units of vision models do, a whole layer at a time.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"coin_scale.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: user errors become one line on stderr and exit code 2/3."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), "coin-scale")
    logging.basicConfig(
        level=logging.DEBUG if "-v" in argv or "--verbose" in argv else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        _apply_config(parser, argv)
        args = parser.parse_args(argv)
        args.argv = argv  # the command as typed, for records such as BENCHMARKS.md rows
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"coin-scale {command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"coin-scale {command}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


def _apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """With `--config FILE`, the YAML's values become the subcommand's defaults (flags still win)."""
    from coin_scale.cli.common import load_config

    path = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    command = next((a for a in argv if not a.startswith("-")), None)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if path is None or command not in sub.choices:
        return
    command_parser = sub.choices[command]
    values = load_config(path, command_parser)
    for action in command_parser._actions:
        if action.dest in values:
            action.required = False
    command_parser.set_defaults(**values)


if __name__ == "__main__":
    sys.exit(main())
