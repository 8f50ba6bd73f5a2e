"""`coin-scale train-probe-cnn` (alias `train-probe-model`): train the probe CNN, a small CNN
whose classes are known scene attributes.

The result is a coin-scale checkpoint that `--model PATH` loads; dissecting it should find units
for the shapes (and colours) the classes are made of.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from coin_scale.cli.common import add_config_arg
from coin_scale.errors import ResourceError, UserError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-probe-cnn` subcommand (`train-probe-model` is its former name, kept)."""
    from coin_scale.training.probe_cnn import TASKS, ProbeTrainConfig

    defaults = ProbeTrainConfig()
    parser = subparsers.add_parser(
        "train-probe-cnn",
        aliases=["train-probe-model"],
        help="train the probe CNN on rendered scenes: a model with known ground truth",
        description=(
            "Render single-object scenes with the procedural renderer, train the probe_cnn "
            "architecture to classify the object's shape (or shape and colour), report held-out "
            "accuracy on scenes from another seed and save a checkpoint for --model PATH."
        ),
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="PATH", help="checkpoint to write"
    )
    parser.add_argument(
        "--task", choices=sorted(TASKS), default=defaults.task,
        help="shape: 10 shape classes; shape_color: 12 colour x shape classes (default shape)",
    )  # fmt: skip
    parser.add_argument("--size", type=int, default=defaults.size, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    parser.add_argument("--n-train", type=int, default=defaults.n_train, help="training images")
    parser.add_argument("--n-val", type=int, default=defaults.n_val, help="held-out images")
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of scenes and weights"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all usable CPUs)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_config_arg(parser)
    parser.set_defaults(func=run)


def check_writable(out: Path) -> None:
    """Fail in one line, before minutes of training, when `out` cannot be written."""
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; expected a file path such as {out}/probe.pt")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ResourceError(
            f"cannot write the checkpoint {out}: {reason}. Fix: choose a writable --out."
        ) from None


def run(args: argparse.Namespace) -> int:
    """Train, save and report; bad flags and an unwritable --out are one-line `UserError`s."""
    from coin_scale.training.probe_cnn import (
        ProbeTrainConfig,
        save_probe_cnn,
        train_probe_cnn,
    )

    try:
        config = ProbeTrainConfig(
            task=args.task, size=args.size, epochs=args.epochs, n_train=args.n_train,
            n_val=args.n_val, seed=args.seed, threads=args.threads, progress=not args.no_progress,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None
    out = Path(args.out)
    check_writable(out)
    module, result = train_probe_cnn(config)
    try:
        save_probe_cnn(out, module, result)
    except OSError as err:
        raise ResourceError(f"cannot write the checkpoint {out}: {err}") from None
    log.info(
        "saved %s: task %s, held-out accuracy %.3f, train accuracy %.3f, %.0fs",
        out, result.task, result.val_accuracy, result.train_accuracy, result.seconds,
    )  # fmt: skip
    if result.val_accuracy < 0.9:
        log.warning(
            "held-out accuracy %.3f is below 0.9: train longer (--epochs, --n-train)",
            result.val_accuracy,
        )
    return 0
