"""The held-out line of a unit's card: its explanation scored on the folder probe's images that
the explainer never saw (`coin_scale.eval.heldout`)."""

from __future__ import annotations

from coin_scale.eval.heldout import PREDICTORS
from coin_scale.report.chain_svg import esc
from coin_scale.sweep.records import UnitFinding


def heldout_line(u: UnitFinding) -> str:
    """One line under the label: AUC, Pearson r, F1 and AUPRC on the held-out images, or why
    the explanation has none; "" when nothing was held out."""
    s = u.heldout
    if s is None:
        return ""
    how = esc(PREDICTORS.get(s.predictor, s.predictor))
    if not s.scored:
        return (
            f'<div class="kv heldout" title="{how}">held-out: not scored '
            f"({esc(s.note or s.reason or '')})</div>"
        )
    r = "—" if s.pearson is None else f"{s.pearson:.2f}"
    return (
        f'<div class="kv heldout" title="predictor: {how}">held-out '
        f'<span class="mono">AUC {s.auc:.2f} · r {r} · F1 {s.f1:.2f} · AUPRC {s.auprc:.2f}</span>'
        f" on {s.n_images} images the explainer never saw ({s.n_positive} above the unit's "
        "threshold)</div>"
    )


def generated_line(u: UnitFinding) -> str:
    """One line under the label: MAIA's predictive evaluation on generated images ("" without)."""
    g = u.generated
    if g is None:
        return ""
    title = "positive prompts: " + "; ".join(g.positive_prompts) + " | neutral: " + "; ".join(
        g.neutral_prompts
    )
    return f'<div class="kv generated" title="{esc(title)}">{esc(g.summary())}</div>'
