"""The registry of warehouse tables: one module per table, each with `Row`, `SPEC`, converters.

To add a table: write `schemas/<name>.py` like `runs.py` and add the module to `_MODULES`; the
DuckDB views, compaction, docs and the round-trip tests pick it up from `TABLES`.
"""

from __future__ import annotations

from coin_scale.errors import close_matches
from coin_scale.storage.schemas import (
    activation_maps,
    agent_images,
    chain_edges,
    class_concepts,
    class_explanations,
    dissections,
    exemplars,
    experiments,
    explanations,
    llm_calls,
    probe_images,
    runs,
    scores,
    unit_stats,
    units,
    visualizations,
)
from coin_scale.storage.spec import TableSpec

_MODULES = (
    runs, probe_images, dissections, unit_stats, exemplars,
    units, explanations, chain_edges, class_explanations, class_concepts, scores, experiments,
    agent_images, llm_calls,
    visualizations, activation_maps,
)  # fmt: skip

TABLES: dict[str, TableSpec] = {m.SPEC.name: m.SPEC for m in _MODULES}
"""Every table by name, in documentation order."""


def get_spec(name: str) -> TableSpec:
    """The spec of table `name`; ValueError listing the known tables otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        hint = close_matches(name, list(TABLES))
        hint = f" (did you mean {hint}?)" if hint else ""
        raise ValueError(
            f"unknown table {name!r}{hint}; known tables: {', '.join(TABLES)}"
        ) from None
