"""A self-contained `report.html` for one sweep run: every image embedded, every string escaped.

The page is built from a `ClassExplanation` alone (plus the image files its paths name). Images
become base64 JPEG data URIs, so the file still works when moved to another machine; an image
that cannot be read becomes a grey placeholder naming its path. No JavaScript, no external assets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from coin_scale.chain.faithfulness import AblationScore, margin_ratio
from coin_scale.chain.graph import Edge
from coin_scale.report.chain_svg import chain_graph_svg, chain_layers, deletion_curve_svg
from coin_scale.report.chain_svg import esc as _esc
from coin_scale.report.concepts import concept_section
from coin_scale.report.heldout import generated_line, heldout_line
from coin_scale.report.images import JPEG_QUALITY, thumbnail_data_uri
from coin_scale.report.map_strip import unit_maps_strip
from coin_scale.report.trajectory import CSS as TRAJECTORY_CSS
from coin_scale.report.trajectory import trajectory_section
from coin_scale.sweep.records import ClassExplanation, Exemplar, UnitFinding
from coin_scale.sweep.text import TERM_WORDS

__all__ = ["JPEG_QUALITY", "REPORT_FILENAME", "render_report", "thumbnail_data_uri", "write_report"]

logger = logging.getLogger(__name__)

REPORT_FILENAME = "report.html"
TARGET_SIZE = 256
"""Longest side, in pixels, of the embedded target image."""
EXEMPLAR_SIZE = 96
"""Longest side, in pixels, of each embedded exemplar thumbnail."""

METHOD_TEXT = {
    "exact_linear": "exact: fc weight × pooled activation; contributions + bias = logit",
    "exact_sae_decoder": "exact: fc weight · SAE decoder direction × mean code; contributions + "
    "decoder bias + reconstruction error + bias = logit",
    "grad_x_activation": "gradient × activation",
}

_CSS = """
:root { --fg:#1d2330; --muted:#5b6474; --line:#dde1e8; --card:#ffffff; --bg:#f4f6f9;
        --pos:#1a7f37; --neg:#b42318; --accent:#2f5bd3; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif; }
main { max-width:1100px; margin:0 auto; padding:24px 28px 48px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:19px; margin:32px 0 12px; padding-bottom:4px; border-bottom:2px solid var(--line); }
.sub { color:var(--muted); margin:0 0 16px; }
code, .mono { font-family:"DejaVu Sans Mono", Menlo, Consolas, monospace; font-size:13px; }
.banner { background:#fdecea; border:2px solid var(--neg); color:#7a1410; border-radius:8px;
          padding:12px 16px; margin:12px 0; font-weight:700; font-size:17px; }
.notes { background:#fff8e1; border:1px solid #e8c766; border-radius:8px; padding:8px 16px;
         margin:12px 0; }
.notes ul { margin:4px 0; padding-left:20px; }
.prediction { display:flex; gap:24px; align-items:flex-start; background:var(--card);
              border:1px solid var(--line); border-radius:10px; padding:16px; }
.prediction img, .placeholder.target { width:256px; flex:none; border-radius:6px; }
.pred-main { font-size:20px; font-weight:700; margin-bottom:8px; }
.top { border-collapse:collapse; width:100%; }
.top td { padding:3px 6px; vertical-align:middle; }
.bar { background:#e6ebf5; border-radius:4px; height:12px; width:220px; }
.bar span { display:block; height:12px; border-radius:4px; background:var(--accent); }
.paragraph { background:var(--card); border-left:4px solid var(--accent); border-radius:6px;
             padding:12px 16px; white-space:pre-wrap; }
.method { color:var(--muted); }
.unit { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px;
        margin:0 0 14px; }
.unit-head { display:flex; flex-wrap:wrap; gap:6px 18px; align-items:baseline; margin-bottom:6px; }
.unit-id { font-weight:700; font-size:16px; }
.contrib { font-weight:700; font-family:"DejaVu Sans Mono", Menlo, monospace; }
.pos { color:var(--pos); } .neg { color:var(--neg); }
.label { font-size:16px; font-weight:600; }
.kv { color:var(--muted); }
.formula { background:#f0f2f6; border-radius:4px; padding:2px 6px; display:inline-block;
           margin:4px 0; white-space:pre-wrap; word-break:break-word; }
.error { color:var(--neg); font-weight:600; margin:6px 0; }
.exemplars { display:flex; flex-wrap:wrap; gap:10px; margin-top:8px; }
.exemplar { width:104px; font-size:12px; text-align:center; color:var(--muted); }
.exemplar.visualization img { outline:2px dashed var(--muted); outline-offset:1px; }
.exemplar img, .placeholder.thumb { width:96px; height:96px; object-fit:cover; border-radius:4px;
                                    border:1px solid var(--line); display:block; margin:0 auto 2px; }
.placeholder { background:#c9ccd1; color:#3d4148; font-size:10px; display:flex; align-items:center;
               justify-content:center; text-align:center; overflow:hidden; word-break:break-all;
               padding:4px; }
.placeholder.target { height:256px; font-size:12px; }
.exemplar.heat { margin-left:14px; }
.exemplar.heat img { outline:2px solid var(--accent); outline-offset:1px; }
.map-note { font-size:12px; margin:6px 0 0; }
.heat-scale { display:inline-block; width:110px; height:10px; border-radius:2px;
              vertical-align:middle; margin:0 4px; }
table.neg-table { border-collapse:collapse; width:100%; background:var(--card);
                  border:1px solid var(--line); border-radius:8px; }
.neg-table th, .neg-table td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line);
                               vertical-align:top; }
.neg-table th { background:#eef1f6; font-size:13px; }
footer { color:var(--muted); font-size:12px; margin-top:32px; }
.chain { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:10px;
         overflow-x:auto; }
.chain svg { display:block; max-width:100%; height:auto; margin:0 auto; }
.drives { color:var(--muted); font-size:13px; margin-top:4px; }
h3 { font-size:16px; margin:20px 0 8px; }
.faith { display:flex; flex-wrap:wrap; gap:16px; align-items:flex-start; }
.faith svg { background:var(--card); border:1px solid var(--line); border-radius:8px; }
table.faith-table { border-collapse:collapse; background:var(--card); border:1px solid var(--line); }
.faith-table th, .faith-table td { padding:5px 9px; border-bottom:1px solid var(--line);
                                   text-align:right; font-size:13px; }
.faith-table th { background:#eef1f6; }
.faith-table td:first-child, .faith-table th:first-child { text-align:left; }
.faith-table tr.ratio td { font-weight:700; }
.faith-table th[colspan], .faith-table td[colspan] { text-align:center; }
"""


def write_report(explanation: ClassExplanation, out_dir: Path) -> Path:
    """Write `out_dir/report.html` for one explanation and return its path.

    Creates `out_dir` if needed. Unreadable image files never fail the report: they render as
    grey placeholders naming the path (and are logged at WARNING).
    """
    if not isinstance(explanation, ClassExplanation):
        raise TypeError(
            f"write_report expected a ClassExplanation, got {type(explanation).__name__}; "
            "pass the record returned by the sweep"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILENAME
    path.write_text(render_report(explanation), encoding="utf-8")
    return path


def render_report(explanation: ClassExplanation) -> str:
    """The whole HTML document for one explanation, as a string (pure apart from reading images)."""
    e = explanation
    title = f"{e.class_name} — {e.model} ({e.weights}) — run {e.run_id}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}{TRAJECTORY_CSS}</style></head><body><main>",
        _header(e),
        _prediction(e),
        "<h2>Explanation</h2>",
        f'<div class="paragraph">{_esc(e.text) if e.text else "<em>no paragraph</em>"}</div>',
        f'<p class="method">Method: {_esc(method_text(e.method))}{_bias_line(e)}</p>',
        concept_section(e),
        _chain_section(e),
        f"<h2>{_esc(_plural(e))} that pushed towards {_esc(e.class_name)} ({len(e.positive)})</h2>",
        "".join(_unit_card(u, e.unit_noun) for u in sorted(e.positive, key=lambda u: u.rank))
        or "<p>No positive contributors.</p>",
        '<p class="kv">share = contribution / the predicted class logit; contributions are '
        f"those of layer <code>{_esc(e.layer)}</code>.</p>",
        _negative_section(e),
        _chain_cards(e),
        _faithfulness_section(e),
        _scores_section(e),
        f"<footer>coin-scale report · run {_esc(e.run_id)} · image {_esc(e.image_path)}</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts)


def method_text(method: str) -> str:
    """Human words for an attribution method name (unknown names are shown as they are)."""
    if method in METHOD_TEXT:
        return METHOD_TEXT[method]
    return f"{method} (gradient × activation)"


def _header(e: ClassExplanation) -> str:
    out = [
        f"<h1>Why {_esc(e.model)} predicted “{_esc(e.class_name)}”</h1>",
        f'<p class="sub">model <code>{_esc(e.model)}</code> · weights <code>{_esc(e.weights)}</code>'
        f" · layer <code>{_esc(e.layer)}</code> · run <code>{_esc(e.run_id)}</code></p>",
    ]
    if e.random_weights:
        out.append(
            '<div class="banner" role="alert">⚠ random weights: these labels mean nothing. '
            "The model was not trained; units and labels below show the pipeline, not real "
            "features.</div>"
        )
    if e.notes:
        items = "".join(f"<li>{_esc(n)}</li>" for n in e.notes)
        out.append(f'<div class="notes"><strong>Notes</strong><ul>{items}</ul></div>')
    return "\n".join(out)


def _prediction(e: ClassExplanation) -> str:
    rows = []
    for name, prob in e.top_classes:
        pct = max(0.0, min(1.0, float(prob))) * 100
        rows.append(
            f"<tr><td>{_esc(name)}</td>"
            f'<td><div class="bar"><span style="width:{pct:.1f}%"></span></div></td>'
            f'<td class="mono">{float(prob) * 100:.1f}%</td></tr>'
        )
    table = f'<table class="top">{"".join(rows)}</table>' if rows else ""
    return (
        '<h2>Prediction</h2><div class="prediction">'
        + _image(e.image_path, TARGET_SIZE, "target", f"target image {e.image_path}")
        + '<div><div class="pred-main">'
        f'{_esc(e.class_name)} <span class="kv">(class {e.class_index})</span> · '
        f"{e.probability * 100:.1f}%</div>"
        f'<div class="kv">logit <span class="mono">{e.logit:.3f}</span></div>'
        f'<div style="margin-top:10px"><strong>Top classes</strong>{table}</div>'
        "</div></div>"
    )


def _plural(e: ClassExplanation) -> str:
    return "SAE features" if e.unit_kind == "sae" else "Units"


def _bias_line(e: ClassExplanation) -> str:
    terms = "".join(
        f' · {_esc(TERM_WORDS.get(name, name))} <span class="mono">{value:+.3f}</span>'
        for name, value in e.terms
    )
    if e.head_bias is None:
        return terms
    total = sum(u.contribution for u in e.positive) + sum(u.contribution for u in e.negative)
    return (
        f' · bias <span class="mono">{e.head_bias:+.3f}</span>{terms}'
        f' · logit <span class="mono">{e.logit:.3f}</span>'
        f" · the {_esc(_plural(e).lower())} shown sum to "
        f'<span class="mono">{total:+.3f}</span> (the layer\'s other {_esc(_plural(e).lower())} '
        "make up the rest)"
    )


def _unit_card(u: UnitFinding, noun: str = "unit", edges: Sequence[Edge] | None = None) -> str:
    """One unit's card; `edges` (a chain node's outgoing edges) replace the share of the logit."""
    head = [
        f'<span class="unit-id">#{u.rank + 1} · {_esc(noun)} {u.unit}</span>',
        f'<span class="contrib {"pos" if u.contribution >= 0 else "neg"}">{u.contribution:+.3f}</span>',
    ]
    if edges is not None:
        head.append('<span class="kv">sum of its edge weights to the layer above</span>')
    elif math.isfinite(u.share):
        head.append(f'<span class="kv">{u.share * 100:.1f}% share</span>')
    if u.iou is not None:
        head.append(f'<span class="kv">IoU {u.iou:.3f}</span>')
    if u.explainer:
        head.append(f'<span class="kv">explainer {_esc(u.explainer)}</span>')
    body = [f'<div class="unit-head">{"".join(head)}</div>']
    if edges:
        targets = ", ".join(
            f"{_esc(x.target_layer)} #{x.target_unit} ({x.weight:+.3f})"
            for x in sorted(edges, key=lambda x: -abs(x.weight))
        )
        body.append(f'<div class="drives">drives {targets}</div>')
    label = _esc(u.label) if u.label else "<em>unexplained</em>"
    body.append(f'<div class="label">{label}</div>')
    if u.description:
        body.append(f"<div>{_esc(u.description)}</div>")
    if u.formula:
        body.append(f'<code class="formula">{_esc(u.formula)}</code>')
    body.append(heldout_line(u))
    body.append(generated_line(u))
    if u.error:
        body.append(f'<div class="error">{_esc(u.reason or "error")}: {_esc(u.error)}</div>')
    if u.exemplars or u.visualization:
        thumbs = _visualization(u.visualization) if u.visualization else ""
        thumbs += "".join(_exemplar(x) for x in u.exemplars)
        body.append(f'<div class="exemplars">{thumbs}</div>')
    body.append(unit_maps_strip(u, EXEMPLAR_SIZE))
    body.append(trajectory_section(u))
    return f'<section class="unit">{"".join(body)}</section>'


def _visualization(x: Exemplar) -> str:
    """The unit's feature visualization, first in the strip, framed apart from the exemplars."""
    alt = f"feature visualization {x.image_path} activation {x.activation:.3f}"
    return (
        f'<div class="exemplar visualization">{_image(x.image_path, EXEMPLAR_SIZE, "thumb", alt)}'
        f"act {x.activation:.3f}<br>visualization</div>"
    )


def _exemplar(x: Exemplar) -> str:
    caption = f"act {x.activation:.3f}"
    if x.label:
        caption += f"<br>{_esc(x.label)}"
    alt = f"exemplar {x.image_path} activation {x.activation:.3f}"
    return (
        f'<div class="exemplar">{_image(x.image_path, EXEMPLAR_SIZE, "thumb", alt)}{caption}</div>'
    )


def _negative_section(e: ClassExplanation) -> str:
    if not e.negative:
        return ""
    rows = []
    for u in sorted(e.negative, key=lambda u: u.rank):
        label = _esc(u.label) if u.label else "<em>unexplained</em>"
        extra = f'<br><code class="formula">{_esc(u.formula)}</code>' if u.formula else ""
        if u.error:
            extra += f'<div class="error">{_esc(u.reason or "error")}: {_esc(u.error)}</div>'
        iou = f"{u.iou:.3f}" if u.iou is not None else "—"
        rows.append(
            f"<tr><td>{_esc(e.unit_noun)} {u.unit}</td>"
            f'<td class="contrib neg">{u.contribution:+.3f}</td>'
            f'<td>{label}{extra}</td><td class="mono">{iou}</td></tr>'
        )
    return (
        f"<h2>{_esc(_plural(e))} that pushed against {_esc(e.class_name)} ({len(e.negative)})</h2>"
        f'<table class="neg-table"><tr><th>{_esc(e.unit_noun)}</th><th>contribution</th><th>label</th>'
        f"<th>IoU</th></tr>{''.join(rows)}</table>"
    )


def _image(path: str, size: int, css_class: str, alt: str) -> str:
    uri = thumbnail_data_uri(path, size)
    if uri is None:
        return (
            f'<div class="placeholder {css_class}" title="{_esc(path)}">'
            f"missing image<br>{_esc(path)}</div>"
        )
    return f'<img class="{css_class}" src="{uri}" alt="{_esc(alt)}">'


def _chain_section(e: ClassExplanation) -> str:
    svg = chain_graph_svg(e)
    if not svg:
        return ""
    methods = sorted({x.method for x in e.chain_edges})
    unit_edges = (
        f"Edges between {_esc(_plural(e).lower())}: {_esc(', '.join(methods))} of the target's "
        "pooled activation with respect to the layer before. "
        if methods
        else ""
    )
    red = "; red = pushed against the class" if e.negative else ""
    return (
        "<h2>Chain</h2>"
        f'<p class="kv">{unit_edges}Edges into the class: contributions to its logit '
        f"({_esc(method_text(e.method))}){red}. Line width is "
        "proportional to |weight| within each pair of neighbouring columns; hover a node or an "
        "edge for its full label and weight.</p>"
        f'<div class="chain">{svg}</div>'
    )


def _chain_cards(e: ClassExplanation) -> str:
    """Cards of the earlier layers' chain units, the layer nearest the class first."""
    if not e.chain_nodes:
        return ""
    layers = chain_layers(e)
    order = [layer for layer in reversed(layers[:-1])]
    order += [u.layer for u in e.chain_nodes if u.layer not in order and u.layer != e.layer]
    order = list(dict.fromkeys(order))
    out = []
    for layer in order:
        units = sorted((u for u in e.chain_nodes if u.layer == layer), key=lambda u: u.rank)
        if not units:
            continue
        out.append(f"<h2>{_esc(layer)}: units that drive the ones above ({len(units)})</h2>")
        for u in units:
            edges = [
                x for x in e.chain_edges if x.source_layer == layer and x.source_unit == u.unit
            ]
            out.append(_unit_card(u, "unit", edges))  # earlier layers: always channels
    return "".join(out)


_SELECTION_TEXT = {
    "chain": "chain (its k strongest units)",
    "random": "random k units",
    "activation": "k most active units",
}


def _faithfulness_section(e: ClassExplanation) -> str:
    if not e.faithfulness:
        return ""
    layers = [layer for layer in chain_layers(e) if any(s.layer == layer for s in e.faithfulness)]
    layers += list(dict.fromkeys(s.layer for s in e.faithfulness if s.layer not in layers))
    parts = [
        "<h2>Faithfulness</h2>",
        '<p class="kv">Ablating a unit sets its activation map to 0 (zero ablation) or to its mean '
        "over the probe set (mean ablation), at every position. Each drop is the predicted class's "
        "value before minus after ablating k units of one layer: its margin (its logit minus the "
        "best other logit), its logit and its probability (in percentage points). The chain's k "
        "units are compared with k random units (mean ± std over the draws) and with the k units "
        "most active on this image; chain / random &gt; 1 means the chain matters more than chance."
        "</p>",
    ]
    for layer in layers:
        scores = [s for s in e.faithfulness if s.layer == layer]
        parts.append(
            f'<h3>{_esc(layer)}</h3><div class="faith">{_faith_table(scores)}'
            f"{deletion_curve_svg(scores, layer, 'zero')}</div>"
        )
    return "".join(parts)


def _scores_section(e: ClassExplanation) -> str:
    """Every explanation's predictive score and InterpScore, with the unscorable ones' reasons."""
    if not e.unit_scores:
        return ""
    labels = {(u.layer, u.unit): u.label for u in (*e.positive, *e.negative, *e.chain_nodes)}
    head = "".join(f"<th>{h}</th>" for h in (
        "unit", "label", "AUC", "Cohen's d", "F1", "AUPRC", "S", "C", "R", "H", "InterpScore",
    ))  # fmt: skip
    rows = [f"<tr>{head}</tr>"]
    for s in e.unit_scores:
        unit = f"{_esc(s.layer)} #{s.unit}"
        label = _esc(labels.get((s.layer, s.unit)) or s.formula or "")
        if s.formula_source == "matcher":
            label += f' <span class="kv">(read as <code>{_esc(s.formula or "")}</code>)</span>'
        if s.predictive is None or s.interp is None:
            rows.append(
                f'<tr><td>{unit}</td><td>{label}</td><td colspan="9">not scored: {_esc(s.note or "")}</td></tr>'
            )
            continue
        p, i = s.predictive, s.interp
        cells = [p.auc, p.cohens_d, p.detection.f1, p.detection.auprc, i.S, i.C, i.R, i.H, i.score]
        numbers = "".join(
            f'<td class="mono">{"—" if v is None else f"{v:.2f}"}</td>' for v in cells
        )
        rows.append(f"<tr><td>{unit}</td><td>{label}</td>{numbers}</tr>")
    return (
        "<h2>Explanation scores</h2>"
        f'<p class="kv">Each explanation tested on {e.scoring_images} rendered scenes the explainer '
        "never saw (plus scenes rendered to satisfy a narrow one): AUC and Cohen's d of the unit's "
        "activations between the scenes that satisfy its formula and the rest; F1 at the cut that "
        "marks as many scenes as satisfy it; AUPRC. InterpScore: S selectivity, C causality (the "
        "logits' move when the unit is zeroed and doubled), R robustness (noise and blur), H human "
        "alignment (the mean of the `--human-ratings` judgments; — when a unit has none, and the "
        "aggregate is then over S, C and R).</p>"
        f'<table class="faith-table">{"".join(rows)}</table>'
    )


def _faith_table(scores: Sequence[AblationScore]) -> str:
    """The drops at the layer's largest k, per selection (rows) and ablation (column groups)."""
    k = max(s.k for s in scores)
    ablations = [a for a in ("zero", "mean") if any(s.ablation == a for s in scores)]
    found: dict[tuple[str, str], AblationScore] = {
        (s.ablation, s.selection): s for s in scores if s.k == k
    }
    head = "".join(f'<th colspan="3">{_esc(a)} ablation</th>' for a in ablations)
    sub = "<th>margin drop</th><th>logit drop</th><th>probability drop</th>" * len(ablations)
    rows = [f"<tr><th>k = {k}</th>{head}</tr>", f"<tr><th>selection</th>{sub}</tr>"]
    for selection in ("chain", "random", "activation"):
        cells = []
        for ablation in ablations:
            s = found.get((ablation, selection))
            if s is None:
                cells.append("<td>—</td>" * 3)
                continue
            spread = f" ± {s.margin_drop_std:.3f}" if s.draws > 1 else ""
            cells.append(
                f'<td class="mono">{s.margin_drop:+.3f}{spread}</td>'
                f'<td class="mono">{s.logit_drop:+.3f}</td>'
                f'<td class="mono">{s.probability_drop * 100:+.1f} pp</td>'
            )
        draws = max((s.draws for s in scores if s.selection == selection), default=1)
        name = _SELECTION_TEXT[selection] + (f", {draws} draws" if selection == "random" else "")
        rows.append(f"<tr><td>{_esc(name)}</td>{''.join(cells)}</tr>")
    ratios = "".join(f'<td colspan="3" class="mono">{_ratio(scores, k, a)}</td>' for a in ablations)
    rows.append(f'<tr class="ratio"><td>margin drop, chain / random</td>{ratios}</tr>')
    return f'<table class="faith-table">{"".join(rows)}</table>'


def _ratio(scores: Sequence[AblationScore], k: int, ablation: str) -> str:
    try:
        ratio = margin_ratio(scores, k, ablation)  # type: ignore[arg-type]
    except ValueError:
        return "—"
    if math.isinf(ratio):
        return "∞ (random drop ≤ 0)"
    return f"{ratio:.2f}×"
