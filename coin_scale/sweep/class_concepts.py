"""A class explanation made of concepts: the explained units' contributions to the class logit
summed per concept they were labelled with (pure, exact-output tested).

A unit's concepts are the positive terms of its formula (`(dog AND grass) AND NOT indoor` ->
dog, grass: a negated concept is what the unit does *not* need, so it gets no credit), or its
label when it has no formula (`clip`'s one word, an LLM's label). A unit with several concepts
splits its contribution among them equally. In the explained layer the shares are of the class
logit; the contributions of the selected units without a label are the `unexplained` part, and
the logit minus every selected unit's contribution (the layer's other units, the head's bias, an
SAE's error terms) is the `rest`. With `--layers`, each earlier chain layer gets its own rows:
its units' contributions are their attributions to the units they drive, so the shares there are
of that layer's total drive into the chain, not of the logit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from coin_scale.concepts.formula import concept_words
from coin_scale.sweep.records import ConceptShare, UnitFinding

CONCEPT = "concept"
UNEXPLAINED = "unexplained"
REST = "rest"
PARTS = (CONCEPT, UNEXPLAINED, REST)
"""What one row is: a concept's units, the selected units without a label, or everything else."""

_KEYWORDS = re.compile(r"\s+(AND NOT|AND|OR)\s+")


def formula_terms(formula: str) -> tuple[list[str], list[str]]:
    """(positive, negated) concept names of a formula in machine form (`to_text`): a term right
    after `AND NOT` is negated, every other one positive."""
    flat = formula.replace("(", " ").replace(")", " ")
    pieces = _KEYWORDS.split(" ".join(flat.split()))
    positive, negated = [pieces[0].strip()], list[str]()
    for keyword, term in zip(pieces[1::2], pieces[2::2], strict=True):
        (negated if keyword == "AND NOT" else positive).append(term.strip())
    return [t for t in positive if t], [t for t in negated if t]


def concepts_of(finding: UnitFinding) -> list[str]:
    """The concepts (in words) a unit's explanation credits; [] when it has no label."""
    if finding.status != "ok" or not finding.label:
        return []
    if finding.formula:
        positive, _ = formula_terms(finding.formula)
        return list(dict.fromkeys(concept_words(name) for name in positive))
    return [finding.label]


def _layer_shares(
    layer: str, findings: Sequence[UnitFinding], total: float, rest: float | None
) -> list[ConceptShare]:
    sums: dict[str, float] = {}
    units: dict[str, list[UnitFinding]] = {}
    unexplained: list[UnitFinding] = []
    for f in findings:
        names = concepts_of(f)
        if not names:
            unexplained.append(f)
        for name in names:
            sums[name] = sums.get(name, 0.0) + f.contribution / len(names)
            units.setdefault(name, []).append(f)

    def share(value: float) -> float:
        return value / total if total > 0 else math.nan

    rows = []
    for name in sorted(sums, key=lambda n: (-sums[n], n)):
        members = sorted(units[name], key=lambda f: -f.contribution)
        scored = [f for f in members if f.score is not None]
        kinds = {f.score_name for f in scored}
        rows.append(ConceptShare(
            layer=layer, part=CONCEPT, concept=name, contribution=sums[name],
            share=share(sums[name]), units=tuple(f.unit for f in members),
            mean_score=sum(f.score for f in scored) / len(scored) if scored else None,  # type: ignore[misc]
            score_name=kinds.pop() if len(kinds) == 1 else None,
        ))  # fmt: skip
    if unexplained:
        value = sum(f.contribution for f in unexplained)
        members = sorted(unexplained, key=lambda f: -f.contribution)
        rows.append(ConceptShare(
            layer=layer, part=UNEXPLAINED, concept="", contribution=value, share=share(value),
            units=tuple(f.unit for f in members),
        ))  # fmt: skip
    if rest is not None:
        rows.append(ConceptShare(
            layer=layer, part=REST, concept="", contribution=rest, share=share(rest),
        ))  # fmt: skip
    return rows


def concept_shares(
    *,
    layer: str,
    logit: float,
    findings: Sequence[UnitFinding],
    chain_nodes: Sequence[UnitFinding] = (),
) -> list[ConceptShare]:
    """The rows of a class explanation by concept: the explained layer's `findings` (positive
    and negative) against the logit, then each earlier chain layer's nodes against their drive."""
    rest = logit - sum(f.contribution for f in findings)
    rows = _layer_shares(layer, findings, logit, rest)
    for name in dict.fromkeys(n.layer for n in chain_nodes):
        nodes = [n for n in chain_nodes if n.layer == name]
        drive = sum(n.contribution for n in nodes if n.contribution > 0)
        rows += _layer_shares(name, nodes, drive, None)
    return rows


def _units_words(units: Sequence[int], shown: int = 3) -> str:
    noun = "unit" if len(units) == 1 else "units"
    listed = ", ".join(str(u) for u in units[:shown])
    return f"{noun} {listed}" + (f" and {len(units) - shown} more" if len(units) > shown else "")


def concept_paragraph(
    *,
    class_name: str,
    probability: float,
    layer: str,
    shares: Sequence[ConceptShare],
    top: int = 5,
) -> str:
    """'Predicted tabby (p=0.81) because of fur texture (31% of the logit, units 12, 407, 1733),
    ...; held back by ...; unlabelled selected units: 9%; the rest of layer4 and the bias: 38%.'"""
    mine = [s for s in shares if s.layer == layer]
    concepts = [s for s in mine if s.part == CONCEPT]
    helping = [s for s in concepts if s.contribution > 0][:top]
    holding = [s for s in concepts if s.contribution < 0][-top:][::-1]

    def phrase(s: ConceptShare, first: bool) -> str:
        pct = f"{s.share:.0%} of the logit" if first else f"{s.share:.0%}"
        if math.isnan(s.share):
            pct = f"{s.contribution:+.2f}"
        return f"{s.concept} ({pct}, {_units_words(s.units)})"

    text = f"Predicted {class_name} (p={probability:.2f}) because of "
    if helping:
        text += ", ".join(phrase(s, i == 0) for i, s in enumerate(helping))
    else:
        text += "no labelled concept (no explained unit drives the logit up)"
    if holding:
        text += "; held back by " + ", ".join(phrase(s, False) for s in holding)
    others = {s.part: s for s in mine if s.part != CONCEPT}
    for part, words in ((UNEXPLAINED, "selected units without a label"),
                        (REST, f"the rest of {layer} and the bias")):  # fmt: skip
        s = others.get(part)
        if s is not None:
            amount = f"{s.contribution:+.2f}" if math.isnan(s.share) else f"{s.share:.0%}"
            text += f"; {words}: {amount}"
    text += "."
    for name in dict.fromkeys(s.layer for s in shares if s.layer != layer):
        chain = [s for s in shares if s.layer == name and s.part == CONCEPT and s.contribution > 0]
        if chain:
            text += f" In {name}, by drive into these units: " + ", ".join(
                f"{s.concept} ({s.share:.0%}, {_units_words(s.units)})" for s in chain[:top]
            ) + "."  # fmt: skip
    return text
