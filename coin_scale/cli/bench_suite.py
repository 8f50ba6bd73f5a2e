"""`coin-scale bench suite`: every throughput figure of issue 9 in one run (JSON on stdout, and
optionally a section appended to BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def _counts(text: str, flag: str) -> tuple[int, ...]:
    from coin_scale.errors import UserError

    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"{flag}: expected counts like 1,2,3; got {text!r}") from None
    if not counts:
        raise UserError(f"{flag}: expected counts like 1,2,3; got {text!r}")
    return counts


def register_suite(benches: argparse._SubParsersAction) -> None:
    from coin_scale.bench.suite import PARTS

    s = benches.add_parser(
        "suite",
        help="the whole throughput suite: pipeline vs bare forward, explainer units/s, gateway "
        "rate, sweep phases, scaling over replicas and simulated nodes",
    )
    s.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    s.add_argument("--model", default="resnet18", help="model of the dissection parts")
    s.add_argument("--weights", default="none")
    s.add_argument("--layer", default="layer4")
    s.add_argument("--images", type=int, default=256, help="synthetic JPEGs per dissection")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--repeats", type=int, default=3, help="runs per measurement; medians reported")
    s.add_argument("--explain-units", type=int, default=256)
    s.add_argument("--explain-images", type=int, default=1000)
    s.add_argument("--llm-rpm", type=int, default=600, help="configured rate of the gateway part")
    s.add_argument("--llm-seconds", type=float, default=75.0, help="length of the gateway part")
    s.add_argument("--sweep-model", default="probe", help="model of the timed sweep (default probe)")
    s.add_argument("--sweep-weights", default="default")
    s.add_argument("--sweep-probe-images", type=int, default=1000)
    s.add_argument("--replicas", default="1,2", help="replica counts of the local curve")
    s.add_argument("--nodes", default="1,2,3", help="simulated node counts of the cluster curve")
    s.add_argument("--address", default=None, help="Ray address of the non-node parts")
    s.add_argument("--append", default=None, metavar="BENCHMARKS.md",
                   help="also append the figures as a table section to this file")  # fmt: skip
    s.set_defaults(func=run_suite_command)


def run_suite_command(args: argparse.Namespace) -> int:
    from coin_scale.bench.suite import SuiteConfig, append_rows, markdown_rows, run_suite
    from coin_scale.errors import UserError

    try:
        config = SuiteConfig(
            model=args.model, weights=args.weights, layer=args.layer, images=args.images,
            batch_size=args.batch_size, repeats=args.repeats, explain_units=args.explain_units,
            explain_images=args.explain_images, llm_rpm=args.llm_rpm,
            llm_seconds=args.llm_seconds, sweep_model=args.sweep_model,
            sweep_weights=args.sweep_weights, sweep_probe_images=args.sweep_probe_images,
            replicas=_counts(args.replicas, "--replicas"), nodes=_counts(args.nodes, "--nodes"),
            parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
            address=args.address,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(f"bench suite: {err}") from None
    result = run_suite(config, on_part=lambda part: print(f"bench suite: {part} ...", file=sys.stderr))
    print(json.dumps(result, indent=2))
    if args.append:
        command = "coin-scale " + " ".join(shlex.quote(a) for a in args.argv)
        append_rows(args.append, markdown_rows(result, command))
        print(f"appended the figures to {args.append}", file=sys.stderr)
    return 0
