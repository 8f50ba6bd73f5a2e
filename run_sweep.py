#!/usr/bin/env python
"""One image -> the units that drive its prediction -> their evidence.

Built so far: the prediction, each unit's contribution to the predicted logit (exact for a
ResNet-style head, gradient x activation otherwise) and, with --probe, each selected unit's
exemplars from a (cached) dissection. Explanations and the class-level chain come next.
"""

from __future__ import annotations

import argparse
import logging
import sys

from coin_scale.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_sweep.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="YAML file whose keys are these flags")
    p.add_argument("--image", required=True, help="the image whose prediction is explained")
    p.add_argument("--model", required=True, help="torchvision model name or coin-scale checkpoint")
    p.add_argument("--weights", default="default", help="default | none | enum name | PATH")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights (--weights none)")
    p.add_argument("--layer", default=None, help="layer (default: last block before the classifier)")
    p.add_argument("--top-k", type=int, default=8, help="positive contributors to explain")
    p.add_argument("--negatives", type=int, default=3, help="negative contributors to list")
    p.add_argument("--probe", default=None, help="probe folder for exemplars (dissected once, cached)")
    p.add_argument("--warehouse", default="warehouse", help="Parquet warehouse directory")
    p.add_argument("--exemplars", type=int, default=5, help="exemplars shown per unit")
    p.add_argument("--address", default=None, help="Ray address (default: a local Ray)")
    return p


def main(argv: list[str] | None = None) -> int:
    from coin_scale.cli.common import load_config
    from coin_scale.sweep.config import SweepConfig
    from coin_scale.sweep.run import run_sweep

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    try:
        if "--config" in argv:
            values = load_config(argv[argv.index("--config") + 1], parser)
            for action in parser._actions:
                if action.dest in values:
                    action.required = False
            parser.set_defaults(**values)
        args = parser.parse_args(argv)
        fields = {k: v for k, v in vars(args).items() if k != "config"}
        try:
            config = SweepConfig(**fields)
        except ValueError as err:
            raise UserError(str(err)) from None
        result = run_sweep(config)
    except UserError as err:
        print(f"run_sweep.py: error: {err}", file=sys.stderr)
        return err.exit_code
    print_result(result, config)
    return 0


def print_result(result, config) -> None:  # type: ignore[no-untyped-def]
    c = result.contributions
    if result.random_weights:
        print("NOTE: random weights (--weights none): the prediction and the units mean nothing.")
    name, prob = result.top_classes[0]
    print(f"predicted: {name} (p={prob:.3f}); runners-up: "
          + ", ".join(f"{n} ({p:.3f})" for n, p in result.top_classes[1:]))  # fmt: skip
    how = "exact: fc weight x pooled activation" if c.method == "exact_linear" else "gradient x activation"
    print(f"units of {c.layer} driving logit {c.logit:.3f} of class #{c.class_index} ({how}):")
    for label, units in (("+", result.positive), ("-", result.negative)):
        for unit, value in units:
            print(f"  {label} unit {unit:>5}  {value:+.4f}")
            for activation, path, image_label in result.exemplars.get(unit, []):
                print(f"        {activation:8.3f}  {image_label or '':<20} {path}")
    if c.bias is not None:
        total = float(c.contributions.sum()) + c.bias
        print(f"  (all {c.contributions.numel()} units sum to {total:.3f} with bias {c.bias:+.3f})")
    if not config.probe:
        print("pass --probe DIR to see each unit's exemplars")


if __name__ == "__main__":
    sys.exit(main())
