"""`coin-scale train-sae`: a sparse autoencoder on one conv layer's maps over a probe set."""

from __future__ import annotations

import argparse

from coin_scale.cli.common import add_config_arg, add_model_args, add_warehouse_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train-sae", help="train a TopK/BatchTopK SAE on a conv layer's maps over a probe set"
    )
    add_config_arg(parser)
    add_model_args(parser)
    parser.add_argument("--layer", required=True, help="conv layer or block (`coin-scale layers`)")
    parser.add_argument("--probe", required=True, help="folder of images, searched recursively")
    parser.add_argument("--out", required=True, help="checkpoint file to write (safetensors)")
    parser.add_argument("--expansion", type=int, default=8, help="latents per channel")
    parser.add_argument("--k", type=int, default=32, help="active latents per token")
    parser.add_argument("--kind", choices=["topk", "batchtopk"], default="topk")
    parser.add_argument("--steps", type=int, default=10_000, help="optimiser steps")
    parser.add_argument("--batch-tokens", type=int, default=4096, help="tokens per step")
    parser.add_argument("--log-every", type=int, default=100, help="steps between metric lines")
    parser.add_argument("--cache", default=None,
                        help="activation cache directory (default: WAREHOUSE/_cache/sae/...); "
                        "a finished cache for the same model, layer and probe is reused")  # fmt: skip
    add_warehouse_arg(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="images per replica call")
    parser.add_argument("--replicas", type=int, default=None,
                        help="model replicas (default: one per GPU, else one using all cores)")  # fmt: skip
    parser.add_argument("--replacement-images", type=int, default=256,
                        help="probe images on which the layer is replaced by the reconstruction")  # fmt: skip
    parser.add_argument("--address", default=None,
                        help="Ray address: none starts a local Ray; auto or ray://host:10001 joins")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coin_scale.runtime.sae import run_train_sae
    from coin_scale.sae.pipeline import TrainSAERequest, metrics_line

    request = TrainSAERequest(
        model=args.model, weights=args.weights, seed=args.seed, layer=args.layer,
        probe=args.probe, out=args.out, expansion=args.expansion, k=args.k, kind=args.kind,
        steps=args.steps, batch_tokens=args.batch_tokens, log_every=args.log_every,
        cache=args.cache, warehouse=args.warehouse, address=args.address,
        batch_size=args.batch_size, replicas=args.replicas,
        replacement_images=args.replacement_images,
    )  # fmt: skip
    result = run_train_sae(request, progress=not args.no_progress)
    if result.cache_reused:
        print(
            f"activation cache reused: {result.cache_dir} ({result.tokens} tokens from "
            f"{result.images_ok} images)"
        )
    else:
        print(
            f"activation cache filled in {result.pass_seconds:.1f}s: {result.cache_dir} "
            f"({result.tokens} tokens from {result.images_ok} images, "
            f"{result.images_unreadable} unreadable)"
        )
    config = result.config
    print(
        f"trained a {config.kind} SAE on {config.model}/{config.layer}: {config.d_in} -> "
        f"{config.d_sae} latents, k {config.k}, {result.metrics['steps_done']} steps in "
        f"{result.train_seconds:.1f}s"
    )
    print(f"final: {metrics_line(result.metrics)}")
    print(f"checkpoint: {result.out}")
    return 0
