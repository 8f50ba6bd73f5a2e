"""`coin-scale layers`: every dissectable layer of a model with its unit count."""

from __future__ import annotations

import argparse

from coin_scale.cli.common import add_model_args


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("layers", help="list the layers of a model that can be dissected")
    add_model_args(parser)
    parser.add_argument("--all", action="store_true", help="also list leaf modules (conv, bn, relu)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coin_scale.models import ModelSource, resolve_model
    from coin_scale.models.loading import payload_layers, structure_module

    payload = resolve_model(ModelSource(model=args.model, weights=args.weights, seed=args.seed))
    layers = payload_layers(payload)
    module = structure_module(payload)  # names only
    containers = {name for name, sub in module.named_modules() if any(True for _ in sub.children())}
    shown = [layer for layer in layers if args.all or layer.name in containers or "." not in layer.name]
    width = max(len(layer.name) for layer in shown)
    kind = max(20, *(len(layer.type) for layer in shown))
    print(f"{'layer':<{width}}  {'units':>6}  {'layout':<6}  {'type':<{kind}} shape")
    for layer in shown:
        shape = "x".join(str(s) for s in layer.shape)
        name, units, layout = f"{layer.name:<{width}}", f"{layer.units:>6}", f"{layer.layout:<6}"
        print(f"{name}  {units}  {layout}  {layer.type:<{kind}} {shape}")
    hidden = len(layers) - len(shown)
    if hidden:
        print(f"({hidden} leaf layers not shown; --all lists them)")
    if not payload.has_class_logits:
        print("(the model outputs an embedding, not class logits: `coin-scale dissect` explains "
              "any layer's units; run_sweep.py, which explains a predicted class, needs a classifier)")  # fmt: skip
    return 0
