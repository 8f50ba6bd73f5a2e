"""Models: resolve names and weights, describe layers, preprocess images."""

from coin_scale.models.layers import LayerInfo, describe_layers, find_layer
from coin_scale.models.loading import (
    ModelPayload,
    ModelSource,
    build_module,
    classification_models,
    resolve_model,
)
from coin_scale.models.preprocess import Preprocess

__all__ = [
    "LayerInfo",
    "ModelPayload",
    "ModelSource",
    "Preprocess",
    "build_module",
    "classification_models",
    "describe_layers",
    "find_layer",
    "resolve_model",
]
