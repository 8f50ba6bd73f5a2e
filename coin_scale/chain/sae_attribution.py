"""Contributions of an SAE's features to a class logit.

At every position the layer's output is rewritten exactly as codes @ decoder + decoder bias +
reconstruction error. Through a pooled linear head the logit is then a sum over features of
mean code x (decoder direction . class weights), plus the decoder bias's and the error's own
terms, plus the head's bias: exact, in float64. Elsewhere the same split is made with the
logit's gradient at the layer (gradient x activation). Pure functions; no Ray.
"""

from __future__ import annotations

import torch
from torch import nn

from coin_scale.chain.attribution import UnitContributions, forward_keeping, pooled_linear_head
from coin_scale.models.sae import SparseAutoencoder, tokens_from_conv

DECODER_BIAS_TERM = "sae_decoder_bias"
ERROR_TERM = "sae_error"


def sae_contributions(
    module: nn.Module,
    layer: str,
    inputs: torch.Tensor,
    sae: SparseAutoencoder,
    class_index: int | None = None,
) -> UnitContributions:
    """Contributions of `sae`'s features (trained on conv layer `layer`) to the logit of
    `class_index` (default: the prediction) for one preprocessed image (1, channel, h, w).

    Codes are encoded in float32, as a dissection encodes them, so a feature's code here is the
    value its statistics and exemplars were ranked by."""
    if inputs.shape[0] != 1:
        raise ValueError(f"sae_contributions takes one image, got a batch of {inputs.shape[0]}")
    module.eval()
    sae = sae.eval()
    head = pooled_linear_head(module, layer)
    with torch.enable_grad() if head is None else torch.inference_mode():
        logits, acts = forward_keeping(module, layer, inputs)
        cls = int(logits[0].argmax()) if class_index is None else class_index
        if head is None:
            (grad,) = torch.autograd.grad(logits[0, cls], acts)
    if acts.dim() != 4 or acts.shape[1] != sae.d_in:
        raise ValueError(
            f"the SAE takes {sae.d_in} channels; layer {layer} outputs {tuple(acts.shape[1:])}"
        )
    tokens = tokens_from_conv(acts.detach()[:1]).float()
    with torch.inference_mode():
        codes = sae.encode(tokens)[0].double()
        directions = sae.w_dec.detach().double()
        decoder_bias = (sae.b_dec / sae.input_scale).detach().double()
    error = tokens.double() - codes @ directions - decoder_bias
    logit = float(logits[0, cls].detach())
    if head is not None:
        weight = head.weight[cls].detach().double()
        contributions = codes.mean(dim=0) * (directions @ weight)
        terms = (
            (DECODER_BIAS_TERM, float(decoder_bias @ weight)),
            (ERROR_TERM, float(error.mean(dim=0) @ weight)),
        )
        head_bias = float(head.bias[cls].detach()) if head.bias is not None else 0.0
        return UnitContributions(
            layer, cls, logit, contributions, head_bias, "exact_sae_decoder", terms
        )
    gradient = tokens_from_conv(grad.detach()[:1]).double()  # (position, channel)
    contributions = (codes * (gradient @ directions.T)).sum(dim=0)
    terms = (
        (DECODER_BIAS_TERM, float((gradient @ decoder_bias).sum())),
        (ERROR_TERM, float((gradient * error).sum())),
    )
    return UnitContributions(layer, cls, logit, contributions, None, "grad_x_activation", terms)
