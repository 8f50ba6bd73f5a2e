"""`coin-scale query`: read-only SQL over the warehouse's DuckDB views."""

from __future__ import annotations

import argparse
import sys

from coin_scale.storage import FORMATS, format_result, run_query
from coin_scale.storage.schemas import TABLES


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `query` subcommand."""
    parser = sub.add_parser(
        "query",
        help="run read-only SQL over the warehouse",
        description="Run read-only SQL (SELECT, WITH, EXPLAIN, DESCRIBE) over one DuckDB view per "
        f"warehouse table: {', '.join(TABLES)}. See docs/storage.md for the columns.",
    )
    parser.add_argument("sql", help='the query, e.g. "SELECT * FROM runs ORDER BY started_at"')
    parser.add_argument(
        "--warehouse",
        default="warehouse",
        metavar="DIR",
        help="warehouse directory (default: %(default)s)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: %(default)s)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N", help="DuckDB threads (default: all cores)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the query and print the result to stdout."""
    columns, rows = run_query(args.warehouse, args.sql, threads=args.threads)
    sys.stdout.write(format_result(columns, rows, args.format))
    return 0
