"""`coin-scale visualize`: images optimised to drive units of a layer (feature visualization)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from coin_scale.cli.common import add_model_args, add_warehouse_arg
from coin_scale.errors import UserError
from coin_scale.records import LAYER_UNIT_KINDS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from coin_scale.models import LayerInfo, ModelPayload
    from coin_scale.visualize import Objective


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "visualize", help="optimise images that drive units of a layer (feature visualization)"
    )
    add_model_args(parser)
    parser.add_argument("--layer", required=True, help="layer of the units (`coin-scale layers`)")
    parser.add_argument("--unit", required=True,
                        help="unit index or a list of indices and ranges, e.g. 0-3,7")  # fmt: skip
    parser.add_argument("--units", choices=LAYER_UNIT_KINDS, default="neuron",
                        help="neuron: the layer's channels; sae: the latents of --sae")  # fmt: skip
    parser.add_argument("--sae", default=None, metavar="PATH",
                        help="SAE checkpoint of this layer (train-sae --out); needs --units sae")  # fmt: skip
    parser.add_argument("--steps", type=int, default=256, help="optimisation steps (default 256)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default: the model's crop, e.g. 224)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1, help="images per unit, optimised together")
    parser.add_argument("--param", choices=["fft", "pixel"], default="fft",
                        help="image parameterisation: fft (decorrelated-colour Fourier) or pixel")  # fmt: skip
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    parser.add_argument("--polish", type=float, default=None,
                        help="fraction of the last steps optimised without jitter, zoom and "
                        "rotation (default 0.75; 0: transforms throughout, more legible, weaker)")  # fmt: skip
    parser.add_argument("--tv", type=float, default=0.0,
                        help="weight of the total-variation penalty (default 0)")  # fmt: skip
    parser.add_argument("--diversity", type=float, default=0.0,
                        help="weight of the diversity term across a --batch (default 0)")  # fmt: skip
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the PNGs, DIR/<layer>_<kind>_<unit>_<i>.png")  # fmt: skip
    add_warehouse_arg(parser)
    parser.add_argument("--run-id", default=None, help="name of this run in the runs table")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def parse_units(spec: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7], sorted and without repeats; UserError on anything else."""
    from coin_scale.records import parse_unit_list

    try:
        return sorted(parse_unit_list(spec))
    except ValueError:
        raise UserError(
            f"--unit {spec!r}: expected an index or a list of indices and ranges like 0-3,7"
        ) from None


@dataclass(frozen=True)
class _Target:
    """The units to visualise and how to measure each."""

    kind: str
    count: int
    objectives: dict[int, Objective]


def _targets(args: argparse.Namespace, payload: ModelPayload, layer: LayerInfo) -> _Target:
    from coin_scale.visualize import channel, direction

    units = parse_units(str(args.unit))
    if args.units == "sae":
        from coin_scale.dissect.pipeline import load_sae_units

        sae = load_sae_units(args.sae, payload, layer).build()
        count, what = sae.d_sae, f"SAE of {layer.name} has {sae.d_sae} latents"
    else:
        if args.sae:
            raise UserError("--sae needs --units sae")
        count, what = (
            layer.units,
            f"layer {layer.name} of {payload.model_id} has {layer.units} units",
        )
    bad = [u for u in units if not 0 <= u < count]
    if bad:
        raise UserError(f"--unit {bad[0]} is out of range: {what} (0 to {count - 1})")
    if args.units == "sae":
        objectives = {
            u: direction(layer.name, sae.w_dec[u].detach(), layout=layer.layout,
                         name=f"sae({layer.name}, {u})")
            for u in units
        }  # fmt: skip
    else:
        objectives = {u: channel(layer.name, u, layout=layer.layout) for u in units}
    return _Target(kind=args.units, count=count, objectives=objectives)


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value, low in (("--steps", args.steps, 1), ("--batch", args.batch, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}; got {value}")
    if args.size is not None and args.size < 2:
        raise UserError(f"--size must be at least 2 pixels; got {args.size}")
    if args.lr <= 0:
        raise UserError(f"--lr must be positive; got {args.lr}")
    if args.polish is None:
        from coin_scale.visualize.optimize import DEFAULT_POLISH

        args.polish = DEFAULT_POLISH
    if not 0.0 <= args.polish <= 1.0:
        raise UserError(f"--polish must be between 0 and 1; got {args.polish}")


def _check_size(module: nn.Module, objective: Objective, payload: ModelPayload, size: int) -> None:
    """One forward pass of a grey image of this size; the model's error as one line otherwise."""
    import torch

    from coin_scale.visualize import measure

    try:
        measure(module, objective, torch.full((1, 3, size, size), 0.5), payload.preprocess)
    except (RuntimeError, ValueError, AssertionError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"--size {size}: {payload.model_id} cannot take {size}x{size} images ({first}); "
            f"its own size is {payload.preprocess.crop}"
        ) from None


def _load_png(path: Path) -> torch.Tensor:
    """A written PNG -> (1, 3, height, width) float in [0, 1], as the model will see it later."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    with Image.open(path) as image:
        return pil_to_tensor(image.convert("RGB")).unsqueeze(0).float() / 255.0


def _save_png(path: Path, image: torch.Tensor) -> None:
    """(3, height, width) in [0, 1] -> an 8-bit PNG at `path`, written atomically."""
    from coin_scale.sae.cache import write_atomic
    from coin_scale.visualize import to_pil

    pixels = to_pil(image)
    write_atomic(path, lambda tmp: pixels.save(tmp, format="PNG"))


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from coin_scale.models import (
        ModelSource,
        build_module,
        describe_layers,
        find_layer,
        resolve_model,
    )
    from coin_scale.storage import Warehouse, get_spec
    from coin_scale.storage.runs import RunRecorder, new_run_id
    from coin_scale.visualize import diversity, make_param, measure, render, standard_transforms, tv

    _check_numbers(args)
    started = datetime.now(UTC)
    payload = resolve_model(ModelSource(model=args.model, weights=args.weights, seed=args.seed))
    module = build_module(payload)
    layer = find_layer(describe_layers(module, payload.arch, payload.preprocess.crop), args.layer,
                       payload.model_id)  # fmt: skip
    target = _targets(args, payload, layer)
    size = args.size or payload.preprocess.crop
    _check_size(module, next(iter(target.objectives.values())), payload, size)

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    warehouse = Warehouse(args.warehouse)
    run_id = args.run_id or new_run_id()
    if payload.random_weights:
        print(
            "NOTE: random weights (--weights none): these images show noise, not a trained network"
        )
    config = {k: v for k, v in vars(args).items() if k != "func"}
    recorder = RunRecorder(
        warehouse=warehouse, run_id=run_id, command="visualize", model=payload.model_id,
        weights=payload.weights_id, layers=[layer.name], probe="(optimised images)", config=config,
        started_at=started,
    )  # fmt: skip
    rows = []
    with recorder:  # 'running' now; 'complete', or 'failed' with the error, when it ends
        bar = tqdm(total=args.steps * len(target.objectives), desc="visualize", unit="step",
                   disable=args.no_progress, leave=False)  # fmt: skip
        for unit, unit_objective in target.objectives.items():
            objective = unit_objective
            if args.tv:
                objective = objective - args.tv * tv()
            if args.diversity and args.batch > 1:
                objective = objective + args.diversity * diversity(layer.name, layout=layer.layout)
            param = make_param(args.param, size, batch=args.batch,
                               generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
            result = render(module, objective, param, steps=args.steps, lr=args.lr,
                            transforms=standard_transforms(size), seed=args.seed,
                            polish=args.polish, preprocess=payload.preprocess,
                            on_step=lambda _s, _v: bar.update(1))  # fmt: skip
            for i, image in enumerate(result.images):
                path = out / f"{layer.name}_{target.kind}_{unit}_{i}.png"
                _save_png(path, image)
                value = float(
                    measure(module, unit_objective, _load_png(path), payload.preprocess)[0]
                )
                rows.append({
                    "run_id": run_id, "model": payload.model_id, "weights": payload.weights_id,
                    "layer": layer.name, "unit": unit, "kind": target.kind, "param": args.param,
                    "steps": args.steps, "size": size, "seed": args.seed, "batch_index": i,
                    "image_path": str(path), "activation": value, "created_at": datetime.now(UTC),
                })  # fmt: skip
                bar.write(
                    f"{path}  activation {value:.4f}  ({result.seconds / len(result.images):.1f}s)"
                )
        bar.close()
        warehouse.write("visualizations", get_spec("visualizations").from_dicts(rows), key=run_id)
        recorder.n_images, recorder.n_failed = len(rows), 0
    print(f"{len(rows)} images in {out}; rows in {args.warehouse} (try: coin-scale query --warehouse "
          f"{args.warehouse} \"SELECT unit, batch_index, activation, image_path FROM visualizations "
          f"WHERE run_id = '{run_id}'\")")  # fmt: skip
    return 0
