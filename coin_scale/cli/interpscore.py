"""`coin-scale interpscore`: the InterpScore framework's batch interface (trials CSV + unit map)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable

DESCRIPTION = """\
Score units from a human-experiment CSV in the InterpScore format: selectivity S (clean images of
the unit's concept vs others), robustness R (the framework's definition: recognised images of the
benign levels 1-2 pooled and of the adversarial level 3, each against clean; level 4 left out),
human alignment H (the share of the concept's high-activation images humans recognised), and
their aggregate. Causality C needs the model and the images, which a CSV does not hold: by
default it is reported as missing and the --weights are renormalised over the measured parts
(the 'parts' column says which). F1, IoU and AUPRC of the unit as a detector of its concept on the
clean images sit beside the scores. --compat reference gives the framework script's own numbers
and columns instead: C = 0, the plain mean of S, C, R and H.
"""

FORMAT_HELP = """\
data.csv: one row per trial, columns trial_category, ground_truth, level, activation_<unit id>
(one per unit), soft_correct (true/false; the human recognised the concept). neuron_map.json: a
JSON object from unit id to concept name, e.g. {"297": "Fire"}; a concept matches ground_truth
case-insensitively. The flags are the framework script's (interpretability_score.py), with the
same meaning; --recognizable-levels and --min-p-value are accepted and recorded, but no score of
the framework depends on them (its robustness and human-alignment functions take neither).
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
        "--weights", nargs="+", default=None, metavar="W",
        help='weights of S C R H, as "0.3 0.3 0.2 0.2" or four numbers (default 0.3 0.3 0.2 0.2; '
        "not used with --compat reference, whose aggregate is the plain mean, as the framework's)",
    )  # fmt: skip
    parser.add_argument(
        "--robust-groups", default=None, metavar="GROUPS",
        help="R's groups of perturbation levels, ';' between groups, ',' within one (default "
        "'1,2;3', the framework's: benign 1-2 pooled, adversarial 3, DeepDream 4 left out); "
        "'per-level' scores every non-clean level on its own (coin-scale's R before 2026-12)",
    )  # fmt: skip
    parser.add_argument(
        "--robust-levels", nargs="+", type=int, default=None, metavar="LEVEL",
        help="R over these levels, each on its own (the per-level variant; same as "
        "--robust-groups '1;2;3' for 1 2 3)",
    )  # fmt: skip
    parser.add_argument(
        "--compat", choices=("coin-scale", "reference"), default="coin-scale",
        help="coin-scale (default): C missing, --weights renormalised over the measured parts; "
        "reference: the framework script's numbers and columns (Neuron, Concept, S, C, R, H, "
        "InterpScore, Notes), C = 0 and the plain mean",
    )  # fmt: skip
    parser.add_argument(
        "--recognizable-levels", nargs="+", type=int, default=[3, 4, 5], metavar="LEVEL",
        help="the framework's flag (default 3 4 5), recorded; none of its scores depends on it",
    )  # fmt: skip
    parser.add_argument(
        "--min-p-value", type=float, default=0.05,
        help="the framework's flag (default 0.05), recorded; none of its scores depends on it",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="print nothing but warnings")
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
    from coin_scale.errors import UserError
    from coin_scale.eval.interpscore import InterpWeights
    from coin_scale.eval.interpscore_batch import (
        REFERENCE_GROUPS,
        InterpBatchConfig,
        groups_text,
        load_trials,
        load_unit_map,
        parse_robust_groups,
        score_units,
        write_results,
    )

    if args.robust_groups is not None and args.robust_levels:
        raise UserError("give --robust-groups or --robust-levels, not both")
    groups = REFERENCE_GROUPS
    if args.robust_groups is not None:
        groups = parse_robust_groups(args.robust_groups)  # type: ignore[assignment]
    elif args.robust_levels:
        groups = tuple((lv,) for lv in dict.fromkeys(args.robust_levels))
    reference = args.compat == "reference"
    config = InterpBatchConfig(
        clean_level=args.clean_level,
        threshold_percentile=args.threshold_percentile,
        weights=InterpWeights.parse(" ".join(args.weights or ["0.3 0.3 0.2 0.2"])),
        robust_groups=groups,
        human_column=args.human_score_col,
        trial_category=None if args.trial_category == "all" else args.trial_category,
        compat=args.compat,
        recognizable_levels=tuple(args.recognizable_levels),
        min_p_value=args.min_p_value,
    )
    unit_map = load_unit_map(args.neuron_map)
    trials = load_trials(args.data_csv, config)
    results, warnings = score_units(trials, unit_map, config)
    store = None
    if args.warehouse is not None:
        from coin_scale.eval.interpscore_store import InterpStore

        store = InterpStore.open(args.warehouse, args.run_id, config=config, source=args.data_csv)
    say = (lambda *_a, **_k: None) if args.quiet else print
    # with --warehouse: 'running' now, then 'complete' (store.write) or 'failed' with the error
    with store.recorder if store is not None else contextlib.nullcontext():
        write_results(args.results_csv, results, reference=reference)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        _print_table(results, len(trials), say)
        notes = sorted({n for r in results for n in r.interp.notes if not n.startswith("H = 0")})
        for note in notes:
            say(f"note: {note}")
        say(f"note: R over the recognised images of the level groups {groups_text(groups)}"
            + (" (the framework's definition)" if groups == REFERENCE_GROUPS else
               " (not the framework's 1,2;3)"))  # fmt: skip
        if reference:
            say("note: --compat reference: the framework script's aggregate, the plain mean of S, "
                "C = 0, R and H (unmeasurable parts 0)" + (
                    "; --weights is not used, as in its script" if args.weights else ""))  # fmt: skip
        elif {"C"} - set(results[0].interp.parts):
            w = config.weights
            say(
                "note: InterpScore here is over " + "+".join(results[0].interp.parts)
                + f" with weights {w.S:g}/{w.C:g}/{w.R:g}/{w.H:g} (S/C/R/H) renormalised; the "
                "framework's script takes the plain mean of S, C = 0, R and H, which "
                "--compat reference gives"
            )  # fmt: skip
        say(f"wrote {len(results)} units to {args.results_csv}")
        if store is not None:
            store.write(results)
            say(
                f"stored in {args.warehouse} (run {store.run_id}): table scores, test 'interpscore'"
            )
    return 0


def _print_table(results: list, trials: int, say: Callable[..., None]) -> None:
    def f(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    say(f"{trials} trials; {len(results)} units (best first)")
    say(
        f"{'unit':>6}  {'concept':<18} {'S':>6} {'C':>6} {'R':>6} {'H':>6} {'score':>6}   {'F1':>5} {'IoU':>5} {'AUPRC':>5}"
    )
    for r in results:
        i, d = r.interp, r.clean_detection
        say(
            f"{r.unit:>6}  {r.concept[:18]:<18} {f(i.S)} {f(i.C)} {f(i.R)} {f(i.H)} {f(i.score)}"
            f"   {d.f1:5.2f} {d.iou:5.2f} {d.auprc:5.2f}"
        )
