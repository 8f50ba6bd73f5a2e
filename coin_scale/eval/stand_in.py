"""A stand-in for the image-text model where the truth is known: the attribute net reads concept
probabilities from rendered scenes' pixels, as CLIP scores photographs against words.

`coin-scale eval synthetic --explainer clip|clip-formula` explains synthetic units (whose true
formulas are over the rendered probe's attributes) with the image-text explainers' own matching
and formula search, their concept scores coming from this scorer instead of open_clip. No
pretrained CLIP can be had here, and on photographs no truth exists; on rendered scenes both the
concepts and each unit's formula are known, so the explainers' accuracy is measured end to end:
pixels -> concept scores -> matching or pseudo-attributes -> label.

The scorer is imperfect in the way a real one is: the net confuses some shapes and textures
(its held-out accuracy is in its checkpoint), so the measure includes the scorer's errors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from coin_scale.explain.evidence import LayerEvidence
from coin_scale.models import ModelSource, build_module, resolve_model
from coin_scale.models.attribute_net import Probabilities, concept_names


class AttributeNetScorer:
    """`ConceptScorer` (`coin_scale.explain.image_text`) of the attribute net: each image's
    probability of every `attribute=value` concept, a softmax per attribute."""

    def __init__(self, checkpoint: str | Path, *, batch_size: int = 256) -> None:
        payload = resolve_model(ModelSource(model=str(checkpoint)))
        heads = payload.arch_kwargs.get("heads")
        if not heads:
            raise ValueError(f"{checkpoint} is not an attribute-net checkpoint (no `heads`)")
        self.payload = payload
        self.module = build_module(payload)
        self.probabilities = Probabilities([len(values) for _, values in heads])
        self.names = concept_names(heads)
        self.summary = "the attribute net as a stand-in image-text model"
        self.batch_size = batch_size

    @torch.inference_mode()
    def scores(self, evidence: LayerEvidence) -> torch.Tensor:
        images = evidence.probe.images
        rows = evidence.image_indices()
        out = torch.full((len(rows), len(self.names)), float("nan"))
        pre = self.payload.preprocess
        for start in range(0, len(rows), self.batch_size):
            batch, where = [], []
            for offset, index in enumerate(rows[start : start + self.batch_size]):
                try:
                    with Image.open(images[index].path) as image:
                        batch.append(pre.load(image))
                except (OSError, UnidentifiedImageError):
                    continue  # an unreadable image keeps its NaN row
                where.append(start + offset)
            if batch:
                logits = self.module(pre.normalize(torch.stack(batch)))
                out[where] = self.probabilities(logits)
        return out
