"""The class-level explanation as a readable paragraph (pure, exact-output tested)."""

from __future__ import annotations

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
) -> str:
    """'Predicted star (p=0.97) because layer4 #12 'red star' (+2.10, 35% ...), ...'."""
    text = f"Predicted {class_name} (p={probability:.2f}) because {layer} "
    text += ", ".join(_unit_phrase(f) for f in positive) if positive else "no unit contributed positively"
    if negative:
        text += "; held back by " + ", ".join(_unit_phrase(f) for f in negative)
    text += "."
    labels = [f.label for f in positive if f.label]
    if labels:
        text += " In short: the model sees " + _join([f"'{label}'" for label in _dedupe(labels)]) + "."
    if not exact:
        text += " (Contributions are gradient x activation, an approximation.)"
    return text


def _dedupe(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return "; ".join(items[:-1]) + "; and " + items[-1]
