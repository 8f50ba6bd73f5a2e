"""The class-level explanation as a readable paragraph (pure, exact-output tested)."""

from __future__ import annotations

from coin_scale.chain.graph import Edge
from coin_scale.sweep.records import UnitFinding


def _unit_phrase(finding: UnitFinding) -> str:
    what = f"'{finding.label}'" if finding.label else "(unexplained)"
    iou = f", IoU {finding.iou:.2f}" if finding.iou is not None and finding.label else ""
    return f"#{finding.unit} {what} ({finding.contribution:+.2f}, {finding.share:.0%} of the logit{iou})"


def class_paragraph(
    *,
    class_name: str,
    probability: float,
    layer: str,
    positive: list[UnitFinding] | tuple[UnitFinding, ...],
    negative: list[UnitFinding] | tuple[UnitFinding, ...],
    exact: bool,
    sae: bool = False,
    terms: tuple[tuple[str, float], ...] = (),
) -> str:
    """'Predicted star (p=0.97) because layer4 #12 'red star' (+2.10, 35% ...), ...'.

    With `sae` the units are SAE features of the layer, and `terms` (the SAE's decoder bias and
    reconstruction error) are reported as their own parts of the logit."""
    where = f"SAE features of {layer}" if sae else layer
    text = f"Predicted {class_name} (p={probability:.2f}) because {where} "
    text += ", ".join(_unit_phrase(f) for f in positive) if positive else "no unit contributed positively"
    if negative:
        text += "; held back by " + ", ".join(_unit_phrase(f) for f in negative)
    text += "."
    labels = [f.label for f in positive if f.label]
    if labels:
        text += " In short: the model sees " + _join([f"'{label}'" for label in _dedupe(labels)]) + "."
    if terms:
        text += " " + _terms_sentence(dict(terms))
    if not exact:
        text += " (Contributions are gradient x activation, an approximation.)"
    return text


TERM_WORDS = {"sae_error": "reconstruction error", "sae_decoder_bias": "decoder bias"}
"""How each non-unit part of the logit is named in text."""


def _terms_sentence(terms: dict[str, float]) -> str:
    """'Not in any feature: the SAE's reconstruction error adds +0.41 and its decoder bias -1.20.'"""
    parts = [f"{TERM_WORDS.get(name, name)} {value:+.2f}" for name, value in terms.items()]
    return "Not in any feature: the SAE's " + " and its ".join(parts) + "."


def _dedupe(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return "; ".join(items[:-1]) + "; and " + items[-1]


CHAIN_PATHS = 3
"""Selected units whose strongest path down the chain is written out."""


def chain_text(
    positive: list[UnitFinding] | tuple[UnitFinding, ...],
    nodes: list[UnitFinding] | tuple[UnitFinding, ...],
    edges: list[Edge] | tuple[Edge, ...],
) -> str:
    """' Down the chain: layer4 #122 'stripes' is driven by layer3 #87 'edges' (+0.80), itself
    driven by layer2 #5 'blobs' (+0.31); ...' following each top unit's strongest driver; empty
    without edges. Edge weights are attributions to the driven unit's pooled activation."""
    if not edges:
        return ""
    found = {(n.layer, n.unit): n for n in (*positive, *nodes)}
    strongest: dict[tuple[str, int], Edge] = {}
    for edge in edges:
        key = (edge.target_layer, edge.target_unit)
        if key not in strongest or edge.weight > strongest[key].weight:
            strongest[key] = edge
    paths = []
    for finding in list(positive)[:CHAIN_PATHS]:
        key = (finding.layer, finding.unit)
        if key not in strongest:
            continue
        words = f"{finding.layer} #{finding.unit} {_what(finding)} is driven by "
        steps = []
        while key in strongest:
            edge = strongest[key]
            key = (edge.source_layer, edge.source_unit)
            node = found.get(key)
            what = _what(node) if node else "(unexplained)"
            steps.append(f"{edge.source_layer} #{edge.source_unit} {what} ({edge.weight:+.2f})")
        paths.append(words + ", itself driven by ".join(steps))
    return " Down the chain: " + "; ".join(paths) + "." if paths else ""


def _what(finding: UnitFinding) -> str:
    return f"'{finding.label}'" if finding.label else "(unexplained)"
