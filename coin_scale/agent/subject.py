"""The unit an agent explains: its identity, its exemplars, and a meter of its activation.

`UnitMeter` is the one-method interface the tools measure through; `TorchUnitMeter` implements it
with the project's activation capture (the same hooks and reduction as a dissection), so a
rendered image's activation is comparable with the exemplars' dissection activations.
"""

from __future__ import annotations

import io
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image
from torch import nn

from coin_scale.models.activations import ActivationCapture, Reduction, UnitTransform
from coin_scale.models.layers import Layout
from coin_scale.models.preprocess import Preprocess
from coin_scale.records import UnitId, UnitKind


@dataclass(frozen=True, kw_only=True)
class ExemplarImage:
    """One of the unit's strongest probe images, as the agent is shown it."""

    png: bytes
    """The image, PNG-encoded."""
    activation: float
    """The unit's activation on it (from the dissection)."""
    attributes: dict[str, Any] | None = None
    """Ground-truth attributes (`unity_pool.vocab.ATTRIBUTES`) of a rendered probe image."""
    label: str | None = None
    """A folder label of a photograph probe set."""
    source: str = ""
    """Where it came from (the probe image's path)."""
    masked_png: bytes | None = None
    """MAIA's masked view (`agent.masks`): the square the model saw, where the unit fires above
    its threshold kept and outlined, the rest dimmed; None without a spatial map."""
    firing_box: tuple[int, int, int, int] | None = None
    """(left, top, right, bottom) in the original image's pixels around where the unit fires
    above its threshold (for the agent's full-resolution crop); None without one."""

    def image(self) -> Image.Image:
        """The decoded RGB image."""
        with Image.open(io.BytesIO(self.png)) as im:
            return im.convert("RGB")


@dataclass(frozen=True, kw_only=True)
class UnitSubject:
    """The unit to explain and its evidence."""

    model: str
    """Model id (as in the warehouse)."""
    layer: str
    """Layer name."""
    unit: int
    """Unit index within the layer."""
    kind: UnitKind = "neuron"
    """'neuron', 'sae' or 'synthetic'."""
    exemplars: tuple[ExemplarImage, ...] = ()
    """Strongest probe images, highest activation first."""

    @property
    def id(self) -> UnitId:
        """The unit's id record."""
        return UnitId(self.model, self.layer, self.kind, self.unit)


class UnitMeter(Protocol):
    """Measures one unit: its activation on each image."""

    def measure(self, images: Sequence[Image.Image]) -> list[float]:
        """One activation per image, in order."""
        ...


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def module_lock(module: nn.Module) -> threading.Lock:
    """The lock of a module: every meter of the same module (any unit) serialises its forward
    passes on it, since hooks are registered on the shared module for the duration of a pass."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.Lock()
        return lock


class TorchUnitMeter:
    """A unit of a layer of a torch module, measured in batches under `inference_mode`.

    Images are preprocessed like a dissection's (`Preprocess.load`, `normalize`) and the layer's
    output (turned into other units by `transform`, e.g. SAE codes) is reduced over space with
    `reduction`, so values match the dissection's. Safe to use
    from several threads; meters sharing a module share one lock (`module_lock`).
    """

    def __init__(
        self,
        module: nn.Module,
        preprocess: Preprocess,
        layer_name: str,
        layout: Layout,
        unit: int,
        reduction: Reduction = "max",
        *,
        batch_size: int = 32,
        transform: UnitTransform | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected at least 1; got {batch_size}")
        self.module = module.eval()
        self.preprocess = preprocess
        self.layer_name = layer_name
        self.unit = unit
        self.reduction: Reduction = reduction
        self.batch_size = batch_size
        transforms = {layer_name: transform} if transform is not None else None
        self.capture = ActivationCapture(module, {layer_name: layout}, (reduction,), transforms)
        self._lock = module_lock(module)
        parameter = next(module.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")

    def measure(self, images: Sequence[Image.Image]) -> list[float]:
        """The unit's activation on every image, in order."""
        out: list[float] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pixels = torch.stack([self.preprocess.load(image) for image in chunk])
            with self._lock, torch.inference_mode():
                captured = self.capture(self.preprocess.normalize(pixels.to(self.device)))
            values = captured[self.layer_name][self.reduction][:, self.unit]
            out.extend(float(v) for v in values)
        return out


def _png(path: Path, max_side: int | None) -> bytes:
    with Image.open(path) as im:
        if im.format == "JPEG" and max_side is not None:
            im.draft("RGB", (max_side, max_side))
        rgb = im.convert("RGB")
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()


def _attributes_by_path(attributes_path: Path) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    root = attributes_path.parent
    rows = pq.read_table(attributes_path).to_pylist()
    return {
        str((root / row.pop("image_path")).resolve()): row for row in rows if "image_path" in row
    }


def exemplars_from_paths(
    items: Sequence[tuple[str | Path, float]],
    *,
    attributes_path: str | Path | None = None,
    labels: Sequence[str | None] | None = None,
    max_side: int | None = 512,
) -> tuple[ExemplarImage, ...]:
    """Exemplars from (image path, activation) pairs, highest activation first as given.

    `attributes_path` is a rendered probe set's `attributes.parquet` (its `image_path` column is
    relative to the file's folder); `labels` are folder labels, one per item. Images are stored
    as PNG, shrunk to `max_side` pixels when larger (None keeps them as they are).
    """
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"labels: expected {len(items)} (one per item); got {len(labels)}")
    known: Mapping[str, dict[str, Any]] = (
        _attributes_by_path(Path(attributes_path)) if attributes_path is not None else {}
    )
    out = []
    for i, (path, activation) in enumerate(items):
        resolved = Path(path).resolve()
        out.append(
            ExemplarImage(
                png=_png(resolved, max_side),
                activation=float(activation),
                attributes=known.get(str(resolved)),
                label=labels[i] if labels is not None else None,
                source=str(path),
            )
        )
    return tuple(out)
