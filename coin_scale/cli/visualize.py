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

    from coin_scale.models import LayerInfo, ModelPayload


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
    parser.add_argument("--address", default=None,
                        help="Ray cluster of the model replicas (default: a local Ray)")  # fmt: skip
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
    """The units to visualise: each one's SAE decoder direction (None for a channel)."""

    kind: str
    count: int
    directions: dict[int, torch.Tensor | None]


def _targets(args: argparse.Namespace, payload: ModelPayload, layer: LayerInfo) -> _Target:
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
        return _Target(args.units, count, {u: sae.w_dec[u].detach().clone() for u in units})
    return _Target(args.units, count, dict.fromkeys(units))


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


def _write_png(path: Path, png: bytes) -> None:
    """The replica's PNG bytes at `path`, written atomically."""
    from coin_scale.sae.cache import write_atomic

    write_atomic(path, lambda tmp: Path(tmp).write_bytes(png))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from coin_scale.models import ModelSource, find_layer, resolve_model
    from coin_scale.models.batches import ReplicaWork
    from coin_scale.models.loading import payload_layers
    from coin_scale.models.module_call import ModuleCall
    from coin_scale.runtime.pools import keep_ray, replica_pool
    from coin_scale.storage import Warehouse, get_spec
    from coin_scale.storage.runs import RunRecorder, new_run_id
    from coin_scale.visualize.command import UnitVisualization, check_size, visualize_unit

    _check_numbers(args)
    started = datetime.now(UTC)
    payload = resolve_model(ModelSource(model=args.model, weights=args.weights, seed=args.seed))
    layer = find_layer(payload_layers(payload), args.layer, payload.model_id)  # no model built
    target = _targets(args, payload, layer)
    size = args.size or payload.preprocess.crop
    specs = [
        UnitVisualization(
            layer=layer.name, layout=layer.layout, unit=unit, direction=vector,
            name=f"sae({layer.name}, {unit})" if vector is not None else "", steps=args.steps,
            size=size, batch=args.batch, param=args.param, lr=args.lr, polish=args.polish,
            tv=args.tv, diversity=args.diversity, seed=args.seed, preprocess=payload.preprocess,
        )  # fmt: skip
        for unit, vector in target.directions.items()
    ]
    out = Path(args.out)
    warehouse = Warehouse(args.warehouse)
    run_id = args.run_id or new_run_id()
    if payload.random_weights:
        print(
            "NOTE: random weights (--weights none): these images show noise, not a trained network"
        )
    config = {k: v for k, v in vars(args).items() if k != "func"}
    rows = []
    work = ReplicaWork(payload, {}, ("max",), None)
    # The optimisation runs on model replicas (a local Ray unless --address), one unit a call,
    # the units spread over the replicas: the driver holds no model.
    with keep_ray(), replica_pool(work, address=args.address, replicas=None) as pool:
        (checked,) = pool.call([ModuleCall.of(check_size, specs[0])])
        if checked.value is not None:
            raise UserError(
                f"--size {size}: {payload.model_id} cannot take {size}x{size} images "
                f"({checked.value}); its own size is {payload.preprocess.crop}"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--out {out}: cannot create the folder ({err.strerror})") from None
        recorder = RunRecorder(
            warehouse=warehouse, run_id=run_id, command="visualize", model=payload.model_id,
            weights=payload.weights_id, layers=[layer.name], probe="(optimised images)",
            config=config, started_at=started,
        )  # fmt: skip
        with recorder:  # 'running' now; 'complete', or 'failed' with the error, when it ends
            bar = tqdm(total=len(specs), desc="visualize", unit="unit",
                       disable=args.no_progress, leave=False)  # fmt: skip
            for done in pool.call([ModuleCall.of(visualize_unit, spec) for spec in specs]):
                result = done.value
                for i, (png, value) in enumerate(zip(result.pngs, result.values, strict=True)):
                    path = out / f"{layer.name}_{target.kind}_{result.unit}_{i}.png"
                    _write_png(path, png)
                    rows.append({
                        "run_id": run_id, "model": payload.model_id,
                        "weights": payload.weights_id, "layer": layer.name, "unit": result.unit,
                        "kind": target.kind, "param": args.param, "steps": args.steps,
                        "size": size, "seed": args.seed, "batch_index": i,
                        "image_path": str(path), "activation": value,
                        "created_at": datetime.now(UTC),
                    })  # fmt: skip
                    bar.write(f"{path}  activation {value:.4f}  "
                              f"({result.seconds / len(result.pngs):.1f}s)")  # fmt: skip
                bar.update(1)
            bar.close()
            rows.sort(key=lambda row: (row["unit"], row["batch_index"]))
            warehouse.write(
                "visualizations", get_spec("visualizations").from_dicts(rows), key=run_id
            )
            recorder.n_images, recorder.n_failed = len(rows), 0
    print(f"{len(rows)} images in {out}; rows in {args.warehouse} (try: coin-scale query --warehouse "
          f"{args.warehouse} \"SELECT unit, batch_index, activation, image_path FROM visualizations "
          f"WHERE run_id = '{run_id}'\")")  # fmt: skip
    return 0
