"""Flags shared by several subcommands, and YAML configs whose keys are the flags' names."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coin_scale.errors import UserError


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True,
        help="torchvision classification model name (resnet18, vit_b_16, ...) or a coin-scale checkpoint",
    )  # fmt: skip
    parser.add_argument(
        "--weights", default="default",
        help="default (torchvision pretrained, downloaded to its cache), none (random, for testing "
        "only), a weights enum name (IMAGENET1K_V1), or PATH to a state-dict file",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights (--weights none)")


def add_warehouse_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warehouse", default="warehouse", help="Parquet warehouse directory (default ./warehouse)"
    )


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None,
        help="YAML file whose keys are this command's flags (dashes or underscores); flags given "
        "on the command line win",
    )  # fmt: skip


def load_config(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a YAML config and check every key is a flag of `parser`."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {file} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {file} must be a mapping of flag names to values")
    known = {a.dest for a in parser._actions if a.dest not in ("help", "config")}
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"config file {file} has unknown key(s) {', '.join(unknown)}; valid keys: "
            + ", ".join(sorted(known))
        )
    return values
