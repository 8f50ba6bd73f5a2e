"""`coin-scale compact`: merge each warehouse partition's small Parquet files into one."""

from __future__ import annotations

import argparse
import sys

from coin_scale.storage import TABLES, compact, format_result


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `compact` subcommand."""
    parser = sub.add_parser(
        "compact",
        help="merge small Parquet files and drop duplicate rows",
        description="Merge the Parquet files of every partition into one, keeping one row per "
        "natural key (the newest), and remove temporary files left by killed writers. "
        "Run it when no coin-scale command is writing to the warehouse.",
    )
    parser.add_argument(
        "--warehouse",
        default="warehouse",
        metavar="DIR",
        help="warehouse directory (default: %(default)s)",
    )
    parser.add_argument(
        "--table",
        action="append",
        choices=list(TABLES),
        metavar="TABLE",
        help=f"compact only this table (repeatable; one of {', '.join(TABLES)}; default: all)",
    )
    parser.add_argument(
        "--tmp-older-than",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="remove temporary files older than this; younger ones may be writes in progress (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compact and print files before/after per table."""
    reports = compact(args.warehouse, tables=args.table, tmp_older_than_s=args.tmp_older_than)
    columns = ["table", "files_before", "files_after", "duplicates_dropped", "tmp_removed"]
    rows = [
        (r.table, r.files_before, r.files_after, r.duplicates_dropped, r.tmp_removed)
        for r in reports
    ]
    sys.stdout.write(format_result(columns, rows, "table"))
    return 0
