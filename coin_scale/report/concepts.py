"""The report's "by concept" section: the class logit summed per concept of the explained units
(`ClassExplanation.concepts`, `coin_scale.sweep.class_concepts`)."""

from __future__ import annotations

import math

from coin_scale.report.chain_svg import esc
from coin_scale.sweep.records import ClassExplanation, ConceptShare

_PART_WORDS = {
    "unexplained": "<em>selected units without a label</em>",
    "rest": "<em>the rest of the layer and the bias</em>",
}


def _row(s: ConceptShare, noun: str) -> str:
    what = esc(s.concept) if s.part == "concept" else _PART_WORDS.get(s.part, esc(s.part))
    share = "—" if math.isnan(s.share) else f"{s.share:.0%}"
    units = ", ".join(str(u) for u in s.units[:8]) + (" …" if len(s.units) > 8 else "")
    score = f"{s.mean_score:.2f} ({esc(s.score_name or 'mixed')})" if s.mean_score is not None else "—"
    sign = "neg" if s.contribution < 0 else "pos"
    return (
        f"<tr><td>{esc(s.layer)}</td><td>{what}</td><td class=\"mono\">{share}</td>"
        f'<td class="contrib {sign}">{s.contribution:+.3f}</td>'
        f"<td>{esc(noun)}s {esc(units) or '—'}</td><td class=\"mono\">{score}</td></tr>"
    )


def concept_section(e: ClassExplanation) -> str:
    """The paragraph by concept and its table; "" when the sweep has no concept rows."""
    if not e.concepts:
        return ""
    rows = "".join(_row(s, e.unit_noun) for s in e.concepts)
    return (
        "<h2>By concept</h2>"
        f'<div class="paragraph concepts">{esc(e.concept_text)}</div>'
        '<table class="concept-table"><tr><th>layer</th><th>concept</th><th>share</th>'
        f"<th>contribution</th><th>{esc(e.unit_noun)}s</th><th>mean explanation score</th></tr>"
        f"{rows}</table>"
        '<p class="kv">share: of the class logit in the explained layer; in an earlier chain '
        "layer, of that layer's drive into the units it explains. A unit labelled with several "
        "concepts splits its contribution among them; a negated concept gets none.</p>"
    )
