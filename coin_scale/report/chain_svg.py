"""Inline SVG drawings for report.html: the chain graph and the faithfulness deletion curve.

Pure functions from records to strings (apart from reading the exemplar images they embed as
data URIs). Every piece of text is escaped; no scripts, no external references.

The chain graph has one column per chain layer (input side left) and the predicted class as the
rightmost node. Edges between units are drawn with a width proportional to |weight|, normalised
within each pair of consecutive columns; edges into the class are the last layer's contributions
to the class logit, red where a unit pushed against the class.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from coin_scale.chain.faithfulness import AblationScore
from coin_scale.report.images import thumbnail_data_uri
from coin_scale.sweep.records import ClassExplanation, UnitFinding

MAX_PER_COLUMN = 12
"""Nodes drawn per layer column; the rest are counted under the column."""
NODE_W = 196
NODE_H = 56
THUMB = 44
"""Displayed side of a node's exemplar thumbnail, in SVG px."""
THUMB_SIZE = 64
"""Longest side, in pixels, of the embedded node thumbnail."""
ROW_GAP = 14
COL_GAP = 84
PAD = 16
HEADER = 30
LABEL_CHARS = 22
"""Characters of a label shown in a node; the full text is in its tooltip."""
MAX_STROKE = 8.0
MIN_STROKE = 1.0

FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
EDGE_COLOUR = "#2f5bd3"
NEGATIVE_COLOUR = "#b42318"
CURVE_COLOURS = {"chain": "#2f5bd3", "random": "#6b7280", "activation": "#d97706"}
CURVE_NAMES = {"chain": "chain", "random": "random", "activation": "most active"}


def esc(value: object) -> str:
    """Text escaped for HTML and XML (attributes included)."""
    return html.escape(str(value), quote=True)


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


@dataclass(frozen=True, slots=True)
class _Node:
    layer: str
    unit: int
    x: float
    y: float


def chain_layers(e: ClassExplanation) -> tuple[str, ...]:
    """The chain's layers, input side first, ending with `e.layer`."""
    return e.layers or (e.layer,)


def chain_graph_svg(e: ClassExplanation) -> str:
    """The chain graph as an inline `<svg>`, or "" when the class has no edge to draw."""
    layers = chain_layers(e)
    columns: list[list[UnitFinding]] = []
    for layer in layers[:-1]:
        columns.append(sorted((u for u in e.chain_nodes if u.layer == layer), key=lambda u: u.rank))
    last = sorted(e.positive, key=lambda u: u.rank) + sorted(e.negative, key=lambda u: u.rank)
    columns.append(last)
    if not last:
        return ""
    shown = [col[:MAX_PER_COLUMN] for col in columns]
    rows = max(len(col) for col in shown)
    row_h = NODE_H + ROW_GAP
    more_h = 22 if any(len(c) > MAX_PER_COLUMN for c in columns) else 0
    width = PAD * 2 + (len(columns) + 1) * NODE_W + len(columns) * COL_GAP
    height = HEADER + rows * row_h + more_h + PAD

    nodes: dict[tuple[str, int], _Node] = {}
    body: list[str] = []
    node_parts: list[str] = []
    for i, (layer, col, full) in enumerate(zip(layers, shown, columns, strict=True)):
        x = PAD + i * (NODE_W + COL_GAP)
        top = HEADER + (rows - len(col)) * row_h / 2
        body.append(_column_header(x, layer))
        for j, u in enumerate(col):
            y = top + j * row_h
            nodes[(u.layer, u.unit)] = _Node(u.layer, u.unit, x, y)
            node_parts.append(_unit_node(u, x, y, e.unit_noun if u.layer == e.layer else "unit"))
        if len(full) > len(col):
            left_out = len(full) - len(col)
            node_parts.append(
                f'<text class="more" x="{x + NODE_W / 2:.1f}" y="{HEADER + rows * row_h + 12:.1f}" '
                f'text-anchor="middle" font-size="12" fill="#5b6474">+{left_out} more not drawn '
                "(see the cards below)</text>"
            )
    cx = PAD + len(columns) * (NODE_W + COL_GAP)
    cy = HEADER + (rows - 1) * row_h / 2
    body.append(_column_header(cx, "class"))
    node_parts.append(_class_node(e, cx, cy))

    body.extend(_unit_edges(e, nodes))
    body.extend(_class_edges(e, nodes, cx, cy))
    return (
        f'<svg class="chain-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" {FONT} font-size="12">'
        f"<title>Chain graph: {esc(' → '.join(layers))} → {esc(e.class_name)}</title>"
        + "".join(body)
        + "".join(node_parts)
        + "</svg>"
    )


def _column_header(x: float, text: str) -> str:
    return (
        f'<text x="{x + NODE_W / 2:.1f}" y="{HEADER - 10}" text-anchor="middle" font-weight="700" '
        f'fill="#1d2330">{esc(truncate(text, 28))}<title>{esc(text)}</title></text>'
    )


def _thumb(path: str | None, x: float, y: float) -> str:
    uri = thumbnail_data_uri(path, THUMB_SIZE) if path else None
    if uri is None:
        return (
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{THUMB}" height="{THUMB}" rx="4" fill="#c9ccd1"/>'
            f'<text x="{x + THUMB / 2:.1f}" y="{y + THUMB / 2 + 4:.1f}" text-anchor="middle" '
            'font-size="9" fill="#3d4148">no image</text>'
        )
    return (
        f'<image href="{uri}" x="{x:.1f}" y="{y:.1f}" width="{THUMB}" height="{THUMB}" '
        'preserveAspectRatio="xMidYMid slice"/>'
    )


def _unit_node(u: UnitFinding, x: float, y: float, noun: str) -> str:
    top = max(u.exemplars, key=lambda ex: ex.activation, default=None)
    label = u.label or ("error: " + u.error if u.error else "unexplained")
    tip = f"{u.layer} {noun} {u.unit}: {label} (contribution {u.contribution:+.3f})"
    if u.formula:
        tip += f"\n{u.formula}"
    tx = x + THUMB + 14
    colour = NEGATIVE_COLOUR if u.contribution < 0 else "#1d2330"
    return (
        f'<g class="node" data-layer="{esc(u.layer)}" data-unit="{u.unit}"><title>{esc(tip)}</title>'
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="7" fill="#ffffff" '
        f'stroke="{NEGATIVE_COLOUR if u.contribution < 0 else "#c5ccd8"}"/>'
        + _thumb(top.image_path if top else None, x + 6, y + (NODE_H - THUMB) / 2)
        + f'<text x="{tx:.1f}" y="{y + 17:.1f}" font-weight="700" fill="{colour}">'
        f"{esc(truncate(f'{u.layer} #{u.unit}', LABEL_CHARS - 4))}</text>"
        f'<text x="{tx:.1f}" y="{y + 33:.1f}" font-size="11" fill="#1d2330">'
        f"{esc(truncate(label, LABEL_CHARS))}</text>"
        f'<text x="{tx:.1f}" y="{y + 48:.1f}" font-size="10" fill="#5b6474">'
        f"{u.contribution:+.3f}</text></g>"
    )


def _class_node(e: ClassExplanation, x: float, y: float) -> str:
    tip = (
        f"class {e.class_name} (index {e.class_index}): p {e.probability:.3f}, logit {e.logit:.3f}"
    )
    tx = x + THUMB + 14
    return (
        f'<g class="node class-node"><title>{esc(tip)}</title>'
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="7" fill="#eef3ff" '
        f'stroke="{EDGE_COLOUR}" stroke-width="2"/>'
        + _thumb(e.image_path, x + 6, y + (NODE_H - THUMB) / 2)
        + f'<text x="{tx:.1f}" y="{y + 22:.1f}" font-weight="700" fill="#1d2330">'
        f"{esc(truncate(e.class_name, LABEL_CHARS - 2))}</text>"
        f'<text x="{tx:.1f}" y="{y + 40:.1f}" font-size="11" fill="#5b6474">'
        f"p {e.probability * 100:.1f}% · logit {e.logit:.2f}</text></g>"
    )


def _stroke(weight: float, largest: float) -> float:
    if largest <= 0 or not math.isfinite(weight):
        return MIN_STROKE
    return MIN_STROKE + (MAX_STROKE - MIN_STROKE) * min(1.0, abs(weight) / largest)


def _path(x1: float, y1: float, x2: float, y2: float) -> str:
    dx = (x2 - x1) / 2
    return f"M{x1:.1f},{y1:.1f} C{x1 + dx:.1f},{y1:.1f} {x2 - dx:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"


def _edge(d: str, width: float, colour: str, tip: str, css: str) -> str:
    return (
        f'<path class="{css}" d="{d}" fill="none" stroke="{colour}" stroke-opacity="0.6" '
        f'stroke-width="{width:.2f}" stroke-linecap="round"><title>{esc(tip)}</title></path>'
    )


def _unit_edges(e: ClassExplanation, nodes: dict[tuple[str, int], _Node]) -> list[str]:
    drawn = [
        (
            edge,
            nodes[(edge.source_layer, edge.source_unit)],
            nodes[(edge.target_layer, edge.target_unit)],
        )
        for edge in e.chain_edges
        if (edge.source_layer, edge.source_unit) in nodes
        and (edge.target_layer, edge.target_unit) in nodes
    ]
    largest: dict[tuple[str, str], float] = {}
    for edge, _, _ in drawn:
        pair = (edge.source_layer, edge.target_layer)
        if math.isfinite(edge.weight):
            largest[pair] = max(largest.get(pair, 0.0), abs(edge.weight))
    out = []
    for edge, a, b in drawn:
        tip = (
            f"{edge.source_layer} #{edge.source_unit} → {edge.target_layer} #{edge.target_unit}: "
            f"weight {edge.weight:+.4f} ({edge.method})"
        )
        d = _path(a.x + NODE_W, a.y + NODE_H / 2, b.x, b.y + NODE_H / 2)
        width = _stroke(edge.weight, largest[(edge.source_layer, edge.target_layer)])
        colour = NEGATIVE_COLOUR if edge.weight < 0 else EDGE_COLOUR
        out.append(_edge(d, width, colour, tip, "edge unit-edge"))
    return out


def _class_edges(
    e: ClassExplanation, nodes: dict[tuple[str, int], _Node], cx: float, cy: float
) -> list[str]:
    units = [u for u in (*e.positive, *e.negative) if (u.layer, u.unit) in nodes]
    largest = max(
        (abs(u.contribution) for u in units if math.isfinite(u.contribution)), default=0.0
    )
    out = []
    for i, u in enumerate(sorted(units, key=lambda u: nodes[(u.layer, u.unit)].y)):
        a = nodes[(u.layer, u.unit)]
        y2 = cy + NODE_H * (i + 1) / (len(units) + 1)
        negative = u.contribution < 0
        tip = (
            f"{u.layer} #{u.unit} → {e.class_name}: contribution {u.contribution:+.4f} "
            f"({e.method}){' — pushes against the class' if negative else ''}"
        )
        d = _path(a.x + NODE_W, a.y + NODE_H / 2, cx, y2)
        colour = NEGATIVE_COLOUR if negative else EDGE_COLOUR
        css = "edge class-edge negative" if negative else "edge class-edge"
        out.append(_edge(d, _stroke(u.contribution, largest), colour, tip, css))
    return out


# ---------------------------------------------------------------- deletion curve

CURVE_W = 440
CURVE_H = 270
_M_LEFT, _M_RIGHT, _M_TOP, _M_BOTTOM = 60, 118, 14, 46


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def deletion_curve_svg(scores: Sequence[AblationScore], layer: str, ablation: str = "zero") -> str:
    """Margin drop against k for the chain's, random and most-active units of one layer, as an
    inline `<svg>` (random: mean with a ± std band); "" when there is nothing to plot."""
    series: dict[str, list[AblationScore]] = {}
    for s in scores:
        if (
            s.layer == layer
            and s.ablation == ablation
            and math.isfinite(s.margin_drop)
            and s.k >= 1
        ):
            series.setdefault(s.selection, []).append(s)
    if not series:
        return ""
    for points in series.values():
        points.sort(key=lambda s: s.k)
    ks = sorted({s.k for points in series.values() for s in points})
    values = [s.margin_drop for points in series.values() for s in points]
    values += [
        s.margin_drop + sign * s.margin_drop_std
        for s in series.get("random", [])
        for sign in (1, -1)
    ]
    low, high = min(0.0, *values), max(0.0, *values)
    if high - low < 1e-9:
        high = low + 1.0
    pad = (high - low) * 0.06
    low, high = (low - pad if low < 0 else low), high + pad
    plot_w = CURVE_W - _M_LEFT - _M_RIGHT
    plot_h = CURVE_H - _M_TOP - _M_BOTTOM
    log_lo, log_hi = math.log2(ks[0]), math.log2(ks[-1])

    def px(k: int) -> float:
        if log_hi == log_lo:
            return _M_LEFT + plot_w / 2
        return _M_LEFT + plot_w * (math.log2(k) - log_lo) / (log_hi - log_lo)

    def py(v: float) -> float:
        return _M_TOP + plot_h * (high - v) / (high - low)

    out = [
        f'<svg class="deletion-curve" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CURVE_W} {CURVE_H}" '
        f'width="{CURVE_W}" height="{CURVE_H}" role="img" {FONT} font-size="11">',
        f"<title>Deletion curve of {esc(layer)} ({esc(ablation)} ablation): margin drop against k"
        "</title>",
        f'<rect x="{_M_LEFT}" y="{_M_TOP}" width="{plot_w}" height="{plot_h}" fill="#ffffff" '
        'stroke="#dde1e8"/>',
    ]
    for tick in _nice_ticks(low, high):
        y = py(tick)
        out.append(
            f'<line x1="{_M_LEFT}" x2="{_M_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{"#9aa3b2" if tick == 0 else "#eef1f6"}"/>'
            f'<text x="{_M_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#5b6474">{tick:g}</text>'
        )
    step = max(1, math.ceil(len(ks) / 10))
    for k in ks[::step]:
        out.append(
            f'<text x="{px(k):.1f}" y="{_M_TOP + plot_h + 15}" text-anchor="middle" '
            f'fill="#5b6474">{k}</text>'
        )
    out.append(
        f'<text class="axis-label" x="{_M_LEFT + plot_w / 2:.1f}" y="{CURVE_H - 8}" '
        'text-anchor="middle" fill="#1d2330">k = units ablated (log scale)</text>'
        f'<text class="axis-label" x="14" y="{_M_TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'fill="#1d2330" transform="rotate(-90 14 {_M_TOP + plot_h / 2:.1f})">margin drop</text>'
    )
    random = series.get("random") or []
    if len(random) > 1 and any(s.margin_drop_std > 0 for s in random):
        upper = [f"{px(s.k):.1f},{py(s.margin_drop + s.margin_drop_std):.1f}" for s in random]
        lower = [
            f"{px(s.k):.1f},{py(s.margin_drop - s.margin_drop_std):.1f}" for s in reversed(random)
        ]
        out.append(
            f'<polygon class="band" points="{" ".join(upper + lower)}" '
            f'fill="{CURVE_COLOURS["random"]}" fill-opacity="0.15"/>'
        )
    legend_y = _M_TOP + 8
    for selection in ("chain", "random", "activation"):
        if selection not in series:
            continue
        points = series[selection]
        colour = CURVE_COLOURS[selection]
        coords = " ".join(f"{px(s.k):.1f},{py(s.margin_drop):.1f}" for s in points)
        out.append(
            f'<polyline class="curve {selection}" points="{coords}" fill="none" stroke="{colour}" '
            'stroke-width="2.2"/>'
        )
        for s in points:
            spread = f" ± {s.margin_drop_std:.3f} over {s.draws} draws" if s.draws > 1 else ""
            tip = f"{CURVE_NAMES[selection]}, k={s.k}: margin drop {s.margin_drop:+.3f}{spread}"
            out.append(
                f'<circle cx="{px(s.k):.1f}" cy="{py(s.margin_drop):.1f}" r="3.2" fill="{colour}">'
                f"<title>{esc(tip)}</title></circle>"
            )
        lx = _M_LEFT + plot_w + 10
        out.append(
            f'<line x1="{lx}" x2="{lx + 18}" y1="{legend_y}" y2="{legend_y}" stroke="{colour}" '
            f'stroke-width="2.2"/><text x="{lx + 23}" y="{legend_y + 4}" fill="#1d2330">'
            f"{CURVE_NAMES[selection]}</text>"
        )
        legend_y += 18
    out.append(
        f'<text x="{_M_LEFT + plot_w + 10}" y="{legend_y + 8}" fill="#5b6474">'
        f"{esc(ablation)} ablation</text></svg>"
    )
    return "".join(out)
