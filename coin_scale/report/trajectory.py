"""An LLM-explained unit's experiment log in the report, MAIA-style: round by round, the tool and
its arguments, the agent's hypothesis text, what it was told, and the images the step showed it
with the unit's activation on each; the last step is its final answer. Plain HTML (`<details>`,
open), every string escaped, every image embedded."""

from __future__ import annotations

import contextlib
import json
import math

from coin_scale.report.chain_svg import esc
from coin_scale.report.images import thumbnail_data_uri
from coin_scale.sweep.records import Exemplar, TrajectoryStep, UnitFinding

THUMB = 80
"""Longest side of an experiment image in the log, pixels."""

MAX_ARGUMENT_CHARS = 400
"""Arguments longer than this are cut in the log (the table keeps 4,000 characters)."""

CSS = """
.trajectory { margin-top:10px; border-top:1px dashed var(--line); padding-top:6px; }
.trajectory summary { cursor:pointer; font-weight:600; color:var(--accent); }
.trajectory ol { margin:6px 0 0; padding-left:22px; }
.trajectory li.step { margin:0 0 10px; }
.step-head { display:flex; flex-wrap:wrap; gap:4px 10px; align-items:baseline; }
.step-tool { font-weight:700; font-family:"DejaVu Sans Mono", Menlo, monospace; }
.step-status { font-size:12px; border-radius:3px; padding:0 5px; background:#eef1f6; }
.step-status.invalid, .step-status.error, .step-status.failed { background:#fdecea; color:var(--neg); }
.step-status.finished { background:#e6f4ea; color:var(--pos); }
.step-args { font-size:12px; color:var(--muted); word-break:break-word; }
.hypothesis { font-style:italic; margin:2px 0; white-space:pre-wrap; }
.told { font-size:13px; color:var(--muted); margin:2px 0; word-break:break-word; }
.step-images { display:flex; flex-wrap:wrap; gap:6px; margin-top:4px; }
.step-image { width:86px; font-size:11px; text-align:center; color:var(--muted); }
.step-image img, .step-image .placeholder { width:80px; height:80px; object-fit:cover;
    border-radius:3px; border:1px solid var(--line); display:block; margin:0 auto 1px; }
"""


def _image(x: Exemplar) -> str:
    value = "not measured" if not math.isfinite(x.activation) else f"act {x.activation:.3g}"
    name = esc(x.label or "")
    uri = thumbnail_data_uri(x.image_path, THUMB)
    if uri is None:
        body = f'<div class="placeholder" title="{esc(x.image_path)}">missing image</div>'
    else:
        body = f'<img src="{uri}" alt="{name} {esc(value)}">'
    return f'<div class="step-image">{body}{name}<br>{esc(value)}</div>'


def _arguments(text: str | None) -> str:
    if not text:
        return ""
    with contextlib.suppress(ValueError):  # as sent when it is not JSON
        text = json.dumps(json.loads(text), separators=(", ", ": "))
    if len(text) > MAX_ARGUMENT_CHARS:
        text = text[: MAX_ARGUMENT_CHARS - 3] + "..."
    return f'<code class="step-args">{esc(text)}</code>'


def _step(s: TrajectoryStep) -> str:
    tool = esc(s.tool) if s.tool else "<em>reply</em>"
    head = (
        f'<div class="step-head"><span class="kv">round {s.round}</span>'
        f'<span class="step-tool">{tool}</span>{_arguments(s.arguments)}'
        f'<span class="step-status {esc(s.status)}">{esc(s.status)}</span></div>'
    )
    parts = [head]
    if s.hypothesis:
        parts.append(f'<div class="hypothesis">{esc(s.hypothesis)}</div>')
    if s.summary:
        parts.append(f'<div class="told">{esc(s.summary)}</div>')
    if s.images:
        parts.append(f'<div class="step-images">{"".join(_image(x) for x in s.images)}</div>')
    return (
        f'<li class="step" data-round="{s.round}" data-step="{s.step}">{"".join(parts)}</li>'
    )


def trajectory_section(u: UnitFinding) -> str:
    """The unit's experiment log ("" when it was not explained by an agent)."""
    if not u.trajectory:
        return ""
    rounds = len({s.round for s in u.trajectory})
    images = sum(len(s.images) for s in u.trajectory)
    answer = ""
    if u.label:
        confidence = f", confidence {u.confidence:.2f}" if u.confidence is not None else ""
        answer = f" → {esc(u.label)}{confidence}"
    steps = "".join(_step(s) for s in u.trajectory)
    return (
        f'<details class="trajectory" open><summary>Experiment log: {len(u.trajectory)} steps in '
        f"{rounds} rounds, {images} images{answer}</summary><ol>{steps}</ol></details>"
    )
