"""Sparse autoencoders over a layer's activations: TopK and BatchTopK SAEs, the fp16 activation
cache, training with float64 metrics, safetensors checkpoints, and layer replacement."""

from coin_scale.models.sae import SparseAutoencoder, conv_from_tokens, tokens_from_conv
from coin_scale.models.sae_config import SAE_KINDS, SAEConfig, SAEKind
from coin_scale.sae.cache import ActivationCacheReader, ActivationCacheWriter, CacheStatistics
from coin_scale.sae.checkpoint import load_sae, save_sae
from coin_scale.sae.metrics import DeadLatents, ReconstructionMetrics, replacement_agreement
from coin_scale.sae.replace import replaced_forward, replacement_metrics
from coin_scale.sae.train import TrainResult, evaluate_sae, train_sae

__all__ = [
    "SAE_KINDS",
    "ActivationCacheReader",
    "ActivationCacheWriter",
    "CacheStatistics",
    "DeadLatents",
    "ReconstructionMetrics",
    "SAEConfig",
    "SAEKind",
    "SparseAutoencoder",
    "TrainResult",
    "conv_from_tokens",
    "evaluate_sae",
    "load_sae",
    "replaced_forward",
    "replacement_agreement",
    "replacement_metrics",
    "save_sae",
    "tokens_from_conv",
    "train_sae",
]
