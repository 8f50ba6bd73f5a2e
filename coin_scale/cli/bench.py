"""`coin-scale bench`: throughput benchmarks printed as JSON."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="throughput benchmarks (JSON on stdout)")
    benches = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    _register_dissect(benches)
    _register_render(benches)
    _register_explain(benches)
    _register_sweep_quality(benches)
    _register_llm(benches)
    _register_sae(benches)
    _register_chain(benches)
    _register_visualize(benches)
    _register_photo(benches)
    from coin_scale.cli.bench_suite import register_suite

    register_suite(benches)


def _register_dissect(benches: argparse._SubParsersAction) -> None:
    d = benches.add_parser(
        "dissect", help="dissection pipeline vs bare model forward (same batch size and device)"
    )
    d.add_argument("--model", default="resnet18")
    d.add_argument("--weights", default="none")
    d.add_argument("--layer", default="layer4")
    d.add_argument("--images", type=int, default=512, help="synthetic 320x240 JPEGs to generate")
    d.add_argument("--probe", default=None, help="use this folder of real images instead")
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--address", default=None)
    d.set_defaults(func=run_dissect)


def _register_render(benches: argparse._SubParsersAction) -> None:
    r = benches.add_parser(
        "render", help="render images/s: in process, through one server, through a RenderPool"
    )
    r.add_argument("--workers", type=int, default=2, help="RenderPool workers (default 2)")
    r.add_argument("--n", type=int, default=256, help="scenes per measurement (default 256)")
    r.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    r.add_argument("--batch-size", type=int, default=16, help="scenes per request (default 16)")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--address", default=None)
    r.set_defaults(func=run_render)


def _register_explain(benches: argparse._SubParsersAction) -> None:
    e = benches.add_parser(
        "explain", help="offline explainer on a synthetic layer with planted formulas (CPU)"
    )
    e.add_argument("--units", type=int, default=512, help="units of the layer (default 512)")
    e.add_argument("--images", type=int, default=1500, help="probe images (default 1500)")
    e.add_argument("--seed", type=int, default=0, help="seed of concepts, formulas, noise")
    e.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    e.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    e.set_defaults(func=run_explain)


def _register_sweep_quality(benches: argparse._SubParsersAction) -> None:
    q = benches.add_parser(
        "sweep-quality",
        help="on the probe CNN: do the top units' labels name the predicted class?",
    )
    q.add_argument("--model", default="probe", help="probe (cached, trained on first use) or PATH")
    q.add_argument("--targets", type=int, default=50, help="rendered single-object targets")
    q.add_argument("--top-k", type=int, default=3, help="units per target whose labels are checked")
    q.add_argument("--probe", default=None, help="probe folder (default: the cached rendered set)")
    q.add_argument("--probe-images", type=int, default=1000)
    q.add_argument("--warehouse", default="warehouse")
    q.set_defaults(func=run_sweep_quality)


def _register_llm(benches: argparse._SubParsersAction) -> None:
    m = benches.add_parser(
        "llm",
        help="LLM gateway and agents against a local fake server: rate limit, concurrency, faults",
    )
    m.add_argument("--latency", type=float, default=0.3, help="server latency per call, s")
    m.add_argument("--rpm", type=int, default=600, help="configured requests/minute (rate part)")
    m.add_argument("--seconds", type=float, default=150.0, help="length of the rate part")
    m.add_argument("--units", type=int, default=32, help="units explained (concurrency, faults)")
    m.add_argument("--fault-rate", type=float, default=0.2, help="share of calls failed (faults)")
    m.add_argument("--cost-units", type=int, default=8,
                   help="units per provider and setting in the cost part")  # fmt: skip
    m.add_argument("--parts", default="rate,concurrency,faults",
                   help="comma-separated parts: rate, concurrency, faults, cost (tokens and "
                   "dollars per unit with and without prompt caching, each provider)")  # fmt: skip
    m.add_argument("--address", default=None)
    m.set_defaults(func=run_llm)


def _register_sae(benches: argparse._SubParsersAction) -> None:
    s = benches.add_parser(
        "sae",
        help="on the probe CNN: an SAE's FVU, L0, dead latents and IoU vs neurons",
    )
    s.add_argument("--model", default="probe", help="probe (cached, trained on first use) or PATH")
    s.add_argument("--layer", default="layer4", help="conv layer or block (default layer4)")
    s.add_argument("--expansion", type=int, default=8, help="latents per channel (default 8)")
    s.add_argument("--k", type=int, default=8, help="active latents per token (default 8)")
    s.add_argument("--kind", choices=["topk", "batchtopk"], default="topk")
    s.add_argument("--steps", type=int, default=3000, help="optimiser steps (default 3000)")
    s.add_argument("--batch-tokens", type=int, default=1024, help="tokens per step (default 1024)")
    s.add_argument("--train-images", type=int, default=4000,
                   help="rendered single-object training images (default 4000)")  # fmt: skip
    s.add_argument("--heldout-images", type=int, default=2000,
                   help="rendered held-out images, from --heldout-seed (default 2000)")  # fmt: skip
    s.add_argument("--train-seed", type=int, default=0, help="scene seed of the training set")
    s.add_argument("--heldout-seed", type=int, default=7, help="scene seed of the held-out set")
    s.add_argument("--sae-seed", type=int, default=0, help="seed of the SAE's weights, shuffles")
    s.add_argument("--top-n", default=None, metavar="N[,N...]",
                   help="mask sizes of the same-size IoU comparison: every neuron and feature "
                        "judged on its N most active images (default: (1 - quantile) x held-out "
                        "images; 'none' skips it)")  # fmt: skip
    s.add_argument("--no-scores", action="store_true",
                   help="skip scoring every neuron's and feature's formula (AUC, Cohen's d, F1, "
                        "AUPRC, S, C, R) on the rendered scoring set")  # fmt: skip
    s.add_argument("--score-images", type=int, default=1000,
                   help="scenes of the scoring set (seed 7, rendered once into the coin-scale "
                        "cache, like the sweep's; default 1000)")  # fmt: skip
    s.add_argument("--work-dir", default=None,
                   help="rendered sets and activation caches (default: ~/.cache/coin-scale)")  # fmt: skip
    s.add_argument("--out", default=None, help="keep the trained SAE here (safetensors)")
    s.add_argument("--address", default=None)
    s.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    s.set_defaults(func=run_sae)


def _register_chain(benches: argparse._SubParsersAction) -> None:
    c = benches.add_parser(
        "chain",
        help="on the probe CNN: ablating the chain's units vs random ones, and labels",
    )
    c.add_argument("--model", default="probe", help="probe (cached, trained on first use) or PATH")
    c.add_argument("--layers", default="layer2,layer3,layer4", help="the chain, input side first")
    c.add_argument("--targets", type=int, default=50, help="rendered single-object targets")
    c.add_argument("--top-k", type=int, default=8, help="chain units of the last layer ablated")
    c.add_argument("--fanout", type=int, default=3, help="drivers kept per chain unit")
    c.add_argument("--chain-method", default="grad_x_activation",
                   choices=("grad_x_activation", "integrated_gradients"))  # fmt: skip
    c.add_argument("--draws", type=int, default=20, help="random unit sets per target")
    c.add_argument("--probe", default=None, help="probe folder (default: the cached rendered set)")
    c.add_argument("--probe-images", type=int, default=1000)
    c.add_argument("--warehouse", default="warehouse")
    c.set_defaults(func=run_chain)


def _register_visualize(benches: argparse._SubParsersAction) -> None:
    v = benches.add_parser(
        "visualize",
        help="on the probe CNN: each unit's visualization vs its top probe exemplar",
    )
    v.add_argument("--model", default="probe", help="probe (cached, trained on first use) or PATH")
    v.add_argument("--weights", default="default")
    v.add_argument("--layer", default=None, help="layer of the units (default: the last block)")
    v.add_argument("--units", default=None, metavar="SPEC",
                   help="units to evaluate, e.g. 0-31,40 (default: every unit of the layer)")  # fmt: skip
    v.add_argument("--steps", type=int, default=256, help="optimisation steps (default 256)")
    v.add_argument("--size", type=int, default=None, help="image side (default: the model's crop)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    v.add_argument("--param", choices=["fft", "pixel"], default="fft")
    v.add_argument("--transforms", choices=["standard", "none"], default="standard",
                   help="standard: jitter, zoom and rotation while optimising (as coin-scale "
                        "visualize); none: the plain image")  # fmt: skip
    v.add_argument("--polish", type=float, default=0.75,
                   help="fraction of the last steps optimised without the transforms (as "
                   "coin-scale visualize --polish; default 0.75)")  # fmt: skip
    v.add_argument("--probe", default=None, help="probe folder (default: the cached rendered set)")
    v.add_argument("--probe-images", type=int, default=1000)
    v.add_argument("--out", default=None, metavar="DIR", help="write each visualization here")
    v.add_argument("--sheet", default=None, metavar="PNG",
                   help="write a contact sheet (visualization beside top exemplar) here")  # fmt: skip
    v.add_argument("--sheet-units", type=int, default=32, help="units on the sheet (default 32)")
    v.add_argument("--no-progress", action="store_true", help="no per-unit lines on stderr")
    v.set_defaults(func=run_visualize)


def _register_photo(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser(
        "photo",
        help="a whole layer over a folder of photographs, labelled by clip, vs both models' bare "
        "forward passes (default resnet152 layer4 over ../shared/data/images/imagenet_sample)",
    )
    p.add_argument("--model", default="resnet152")
    p.add_argument("--weights", default="none", help="none (default: speed does not depend on them)")
    p.add_argument("--layer", default="layer4")
    p.add_argument("--probe", default=None,
                   help="a folder of photographs (default: the ImageNet sample beside the checkout)")  # fmt: skip
    p.add_argument("--explainer", default="clip", help="clip (default) or clip-formula")
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--clip-weights", default="none", help="none (default), default or PATH")
    p.add_argument("--concepts", default="photo", help="vocabulary (default photo: all of them)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bare-images", type=int, default=256,
                   help="images each bare forward pass is timed on (default 256)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=1, help="whole runs; medians reported")
    p.add_argument("--address", default=None)
    p.set_defaults(func=run_photo)


def run_photo(args: argparse.Namespace) -> int:
    from coin_scale.bench.photo_bench import PhotoBenchConfig, run_photo_bench
    from coin_scale.errors import UserError

    if args.repeats < 1 or args.batch_size < 1 or args.bare_images < 1:
        raise UserError("--repeats, --batch-size and --bare-images must be at least 1")
    config = PhotoBenchConfig(
        model=args.model, weights=args.weights, layer=args.layer, probe=args.probe,
        explainer=args.explainer, clip_model=args.clip_model, clip_weights=args.clip_weights,
        concepts=args.concepts, batch_size=args.batch_size, bare_images=args.bare_images,
        repeats=args.repeats, address=args.address,
    )  # fmt: skip
    try:
        result = run_photo_bench(config)
    except ValueError as err:
        raise UserError(f"bench photo: {err}") from None
    print(json.dumps(result, indent=2))
    return 0


def run_dissect(args: argparse.Namespace) -> int:
    from coin_scale.bench.dissect_bench import DissectBenchConfig, run_dissect_bench
    from coin_scale.errors import UserError

    if args.images < 1 or args.repeats < 1 or args.batch_size < 1:
        raise UserError("--images, --repeats and --batch-size must be at least 1")
    config = DissectBenchConfig(
        model=args.model, weights=args.weights, layer=args.layer, images=args.images,
        probe=args.probe, batch_size=args.batch_size, repeats=args.repeats, address=args.address,
    )  # fmt: skip
    print(json.dumps(run_dissect_bench(config), indent=2))
    return 0


def run_render(args: argparse.Namespace) -> int:
    from coin_scale.bench.render_bench import RenderBenchConfig, run_render_bench
    from coin_scale.errors import UserError

    try:
        config = RenderBenchConfig(
            workers=args.workers, n=args.n, size=args.size, batch_size=args.batch_size,
            repeats=args.repeats, address=args.address,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(f"bench render: {err}") from err
    print(json.dumps(run_render_bench(config), indent=2))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from coin_scale.bench.explain_bench import ExplainBenchConfig, run_explain_bench
    from coin_scale.errors import UserError

    try:
        config = ExplainBenchConfig(
            units=args.units, images=args.images, seed=args.seed, repeats=args.repeats
        )
    except ValueError as err:
        raise UserError(f"bench explain: {err}") from err
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise UserError(f"bench explain: --threads expected >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    print(json.dumps(run_explain_bench(config), indent=2))
    return 0


def run_sweep_quality(args: argparse.Namespace) -> int:
    from coin_scale.errors import UserError
    from coin_scale.sweep.inputs import probe_cnn_checkpoint
    from coin_scale.sweep.quality import QualityConfig, evaluate_label_quality

    if args.targets < 1 or args.top_k < 1:
        raise UserError("--targets and --top-k must be at least 1")
    model = probe_cnn_checkpoint() if args.model == "probe" else args.model
    config = QualityConfig(
        model=model, targets=args.targets, top_k=args.top_k, probe=args.probe,
        probe_images=args.probe_images, warehouse=args.warehouse,
    )  # fmt: skip
    print(json.dumps(evaluate_label_quality(config), indent=2))
    return 0


def run_llm(args: argparse.Namespace) -> int:
    from coin_scale.bench.llm_bench import LLMBenchConfig, run_llm_bench
    from coin_scale.errors import UserError

    try:
        config = LLMBenchConfig(
            latency_s=args.latency, rpm=args.rpm, rate_seconds=args.seconds, units=args.units,
            fault_rate=args.fault_rate, address=args.address, cost_units=args.cost_units,
            parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None
    print(json.dumps(run_llm_bench(config), indent=2))
    return 0


def _top_n_sizes(text: str | None) -> tuple[int, ...] | None:
    """--top-n: None (the default size), 'none' (skip), or comma-separated mask sizes."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"--top-n must be comma-separated integers or 'none', got {text!r}"
        ) from None


def run_sae(args: argparse.Namespace) -> int:
    from coin_scale.bench.sae_bench import SAEBenchConfig, run_sae_bench
    from coin_scale.errors import UserError
    from coin_scale.sweep.inputs import probe_cnn_checkpoint

    try:
        top_n = _top_n_sizes(args.top_n)
        config = SAEBenchConfig(
            model=probe_cnn_checkpoint() if args.model == "probe" else args.model, layer=args.layer,
            expansion=args.expansion, k=args.k, kind=args.kind, steps=args.steps,
            batch_tokens=args.batch_tokens, train_images=args.train_images,
            heldout_images=args.heldout_images, train_seed=args.train_seed,
            heldout_seed=args.heldout_seed, sae_seed=args.sae_seed, work_dir=args.work_dir,
            out=args.out, address=args.address, top_n=top_n, scores=not args.no_scores,
            score_images=args.score_images,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(f"bench sae: {err}") from None
    report = run_sae_bench(config, progress=not args.no_progress)
    print(json.dumps(report, indent=2))
    if report["scores"] is not None:
        from coin_scale.bench.sae_summaries import format_score_table

        for subset in (None, "full_mask"):
            print(format_score_table(report["scores"], subset) + "\n", file=sys.stderr)
    return 0


def run_chain(args: argparse.Namespace) -> int:
    from coin_scale.bench.chain_bench import ChainBenchConfig, run_chain_bench
    from coin_scale.errors import UserError
    from coin_scale.sweep.inputs import probe_cnn_checkpoint

    if min(args.targets, args.top_k, args.fanout, args.draws) < 1:
        raise UserError("--targets, --top-k, --fanout and --draws must be at least 1")
    layers = tuple(name.strip() for name in args.layers.split(",") if name.strip())
    config = ChainBenchConfig(
        model=probe_cnn_checkpoint() if args.model == "probe" else args.model, layers=layers,
        targets=args.targets, top_k=args.top_k, fanout=args.fanout, method=args.chain_method,
        draws=args.draws, probe=args.probe, probe_images=args.probe_images,
        warehouse=args.warehouse,
    )  # fmt: skip
    print(json.dumps(run_chain_bench(config), indent=2))
    return 0


def run_visualize(args: argparse.Namespace) -> int:
    from coin_scale.bench.visualize_bench import (
        VisualizeBenchConfig,
        VisualizeBenchRun,
        run_visualize_bench,
    )
    from coin_scale.cli.visualize import parse_units
    from coin_scale.errors import UserError
    from coin_scale.sweep.inputs import probe_cnn_checkpoint

    if args.probe_images < 1 or args.sheet_units < 1:
        raise UserError("--probe-images and --sheet-units must be at least 1")
    try:
        config = VisualizeBenchConfig(
            units=tuple(parse_units(args.units)) if args.units else None, steps=args.steps,
            size=args.size, seed=args.seed, lr=args.lr, param=args.param,
            transforms=args.transforms, polish=args.polish,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(f"bench visualize: {err}") from None
    run = VisualizeBenchRun(
        model=probe_cnn_checkpoint() if args.model == "probe" else args.model, weights=args.weights,
        layer=args.layer, probe=args.probe, probe_images=args.probe_images, out=args.out,
        sheet=args.sheet, sheet_units=args.sheet_units, progress=not args.no_progress,
    )  # fmt: skip
    try:
        report = run_visualize_bench(run, config)
    except ValueError as err:
        raise UserError(f"bench visualize: {str(err).splitlines()[0]}") from None
    print(json.dumps(report, indent=2))
    return 0
