"""`coin-scale interpscore`: the InterpScore framework's batch interface (trials CSV + unit map)."""

from __future__ import annotations

import argparse
import contextlib

DESCRIPTION = """\
Score units from a human-experiment CSV in the InterpScore format: selectivity S (clean images of
the unit's concept vs others), robustness R (perturbed levels humans still recognise vs clean),
human alignment H (the share of the concept's high-activation images humans recognised), and
their weighted aggregate. Causality C needs the model and the images, which a CSV does not hold:
it is reported as missing and the aggregate's weights are renormalised over the measured parts
(the 'parts' column says which). F1, IoU and AUPRC of the unit as a detector of its concept on the
clean images sit beside the scores.
"""

FORMAT_HELP = """\
data.csv: one row per trial, columns trial_category, ground_truth, level, activation_<unit id>
(one per unit), soft_correct (true/false; the human recognised the concept). neuron_map.json: a
JSON object from unit id to concept name, e.g. {"297": "Fire"}; a concept matches ground_truth
case-insensitively.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "interpscore",
        help="InterpScore (selectivity, causality, robustness, human alignment) from a trials CSV",
        description=DESCRIPTION,
        epilog=FORMAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data_csv", help="trials CSV")
    parser.add_argument("neuron_map", help="JSON map from unit id to concept")
    parser.add_argument("results_csv", help="where to write one row per unit")
    parser.add_argument(
        "--clean-level", type=int, default=5, help="the unperturbed level (default 5)"
    )
    parser.add_argument(
        "--threshold-percentile", type=float, default=0.95,
        help="quantile of the unit's clean non-concept activations above which it fires (default 0.95)",
    )  # fmt: skip
    parser.add_argument(
        "--weights", nargs="+", default=["0.3 0.3 0.2 0.2"], metavar="W",
        help='weights of S C R H, as "0.3 0.3 0.2 0.2" or four numbers (default 0.3 0.3 0.2 0.2)',
    )  # fmt: skip
    parser.add_argument(
        "--robust-levels", nargs="+", type=int, default=None, metavar="LEVEL",
        help="perturbation levels for R (default: every level but the clean one)",
    )  # fmt: skip
    parser.add_argument(
        "--human-score-col", default="soft_correct",
        help="column of the human's answer (default soft_correct)",
    )  # fmt: skip
    parser.add_argument(
        "--trial-category", default="experiment",
        help="keep trials of this category (default experiment; 'all' keeps every row)",
    )  # fmt: skip
    parser.add_argument(
        "--warehouse", default=None, help="also store the scores in this warehouse's scores table"
    )
    parser.add_argument("--run-id", default=None, help="run id for --warehouse (default: new)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coin_scale.eval.interpscore import InterpWeights
    from coin_scale.eval.interpscore_batch import (
        InterpBatchConfig,
        load_trials,
        load_unit_map,
        score_units,
        write_results,
    )

    config = InterpBatchConfig(
        clean_level=args.clean_level,
        threshold_percentile=args.threshold_percentile,
        weights=InterpWeights.parse(" ".join(args.weights)),
        robust_levels=tuple(args.robust_levels) if args.robust_levels else None,
        human_column=args.human_score_col,
        trial_category=None if args.trial_category == "all" else args.trial_category,
    )
    unit_map = load_unit_map(args.neuron_map)
    trials = load_trials(args.data_csv, config)
    results, warnings = score_units(trials, unit_map, config)
    store = None
    if args.warehouse is not None:
        from coin_scale.eval.interpscore_store import InterpStore

        store = InterpStore.open(args.warehouse, args.run_id, config=config, source=args.data_csv)
    # with --warehouse: 'running' now, then 'complete' (store.write) or 'failed' with the error
    with store.recorder if store is not None else contextlib.nullcontext():
        write_results(args.results_csv, results)
        for warning in warnings:
            print(f"warning: {warning}")
        _print_table(results, len(trials))
        notes = sorted({n for r in results for n in r.interp.notes if not n.startswith("H = 0")})
        for note in notes:
            print(f"note: {note}")
        if {"C"} - set(results[0].interp.parts):
            print(
                "note: InterpScore here is over "
                + "+".join(results[0].interp.parts)
                + " with weights renormalised; it is not comparable to a score that includes C"
            )
        print(f"wrote {len(results)} units to {args.results_csv}")
        if store is not None:
            store.write(results)
            print(
                f"stored in {args.warehouse} (run {store.run_id}): table scores, test 'interpscore'"
            )
    return 0


def _print_table(results: list, trials: int) -> None:
    def f(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    print(f"{trials} trials; {len(results)} units (best first)")
    print(
        f"{'unit':>6}  {'concept':<18} {'S':>6} {'C':>6} {'R':>6} {'H':>6} {'score':>6}   {'F1':>5} {'IoU':>5} {'AUPRC':>5}"
    )
    for r in results:
        i, d = r.interp, r.clean_detection
        print(
            f"{r.unit:>6}  {r.concept[:18]:<18} {f(i.S)} {f(i.C)} {f(i.R)} {f(i.H)} {f(i.score)}"
            f"   {d.f1:5.2f} {d.iou:5.2f} {d.auprc:5.2f}"
        )
