"""A unit card's spatial evidence: the target image under the unit's heat map, then its masked
exemplars (MAIA-style), with a note saying which threshold cuts them and what the colours mean.

The images are drawn by the pure functions of `coin_scale.report.spatial` from the maps on the
finding (`UnitFinding.target_map`, `Exemplar.activation_map`) and embedded as JPEG data URIs like
every other image of the report; a finding without maps gets no strip."""

from __future__ import annotations

import numpy as np

from coin_scale.report.chain_svg import esc
from coin_scale.report.images import image_data_uri, load_rgb
from coin_scale.report.spatial import (
    DIM,
    heat_overlay,
    heat_scale_css,
    masked_exemplar,
    model_view,
    upsample_map,
)
from coin_scale.sweep.records import ActivationMap, Exemplar, UnitFinding, UnitThreshold

SCALE = 2
_SPACER = '<div class="exemplar"></div>'
"""Drawn at this multiple of the thumbnail size, so the outline stays sharp on dense screens."""


def unit_maps_strip(u: UnitFinding, size: int) -> str:
    """The strip of `u`'s card (thumbnails of `size` px); '' when it has no maps."""
    t = u.threshold
    masked = [x for x in u.exemplars if x.activation_map is not None] if t is not None else []
    target = u.target_map if u.target_map and u.target_map.activation_map else None
    if not masked and target is None:
        return ""
    cells, notes = [], []
    if masked and t is not None:  # each under its plain exemplar (and the visualization's slot)
        cells = [_SPACER] if u.visualization else []
        cells += [
            _masked_cell(x, x.activation_map, t, size) if x.activation_map else _SPACER
            for x in u.exemplars
        ]
        notes.append(threshold_note(t))
    if target is not None and target.activation_map is not None:
        m = as_array(target.activation_map)
        top = max(float(m.max()), t.value if t is not None else 0.0)
        cells.append(_heat_cell(target.image_path, target.activation_map, top, size))
        against = " and T" if t is not None else ""
        notes.append(
            f'Heat map of the unit on the target (last, framed): <span class="heat-scale" '
            f'style="background:{heat_scale_css()}"></span> 0 → {top:.3f} (the larger of its '
            f"peak here{against})."
        )
    return (
        f'<div class="exemplars spatial">{"".join(cells)}</div>'
        f'<p class="kv map-note">{" ".join(notes)}</p>'
    )


def threshold_note(t: UnitThreshold) -> str:
    """What the masked exemplars show, and which threshold cuts them."""
    return (
        "Masked exemplars (MAIA-style): the unit's map upsampled bilinearly over the model's "
        f"centre crop; kept and outlined where it exceeds the unit's threshold T = {t.value:.3f} "
        f"(its top {1 - t.quantile:.0%} of activations: the {t.quantile:g} quantile over every "
        f"position of its maps on {t.images} probe images drawn at random), the rest dimmed to "
        f"{DIM:.0%}; the caption says how much of the crop is above T."
    )


def as_array(m: ActivationMap) -> np.ndarray:
    """The map as float32 (height, width)."""
    return np.asarray(m.values, dtype=np.float32).reshape(m.height, m.width)


def _heat_cell(path: str, m: ActivationMap, top: float, size: int) -> str:
    values = as_array(m)
    image = load_rgb(path)
    if image is None:
        return _placeholder(path)
    view = model_view(image, m.crop_fraction, size * SCALE)
    uri = image_data_uri(heat_overlay(view, values, top))
    alt = f"heat map of the unit on the target {path}"
    caption = f"target<br>peak {float(values.max()):.3f}"
    return f'<div class="exemplar heat"><img class="thumb" src="{uri}" alt="{esc(alt)}">{caption}</div>'


def _masked_cell(x: Exemplar, m: ActivationMap, t: UnitThreshold, size: int) -> str:
    values = as_array(m)
    image = load_rgb(x.image_path)
    if image is None:
        return _placeholder(x.image_path)
    view = model_view(image, m.crop_fraction, size * SCALE)
    uri = image_data_uri(masked_exemplar(view, values, t.value))
    above = float((upsample_map(values, size * SCALE) > t.value).mean())
    share = "never" if above == 0 else "&lt;1%" if above < 0.01 else f"{above:.0%}"
    caption = f"{share} &gt; T"
    alt = f"masked exemplar {x.image_path} threshold {t.value:.3f}"
    return f'<div class="exemplar masked"><img class="thumb" src="{uri}" alt="{esc(alt)}">{caption}</div>'


def _placeholder(path: str) -> str:
    return (
        f'<div class="exemplar"><div class="placeholder thumb" title="{esc(path)}">missing image'
        f"<br>{esc(path)}</div></div>"
    )
