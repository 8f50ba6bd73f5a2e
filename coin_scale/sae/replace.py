"""What a model keeps when one layer's output is replaced by its SAE reconstruction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from coin_scale.models.sae import SparseAutoencoder, conv_from_tokens, tokens_from_conv
from coin_scale.sae.metrics import replacement_agreement

if TYPE_CHECKING:  # coin_scale.models imports torchvision's model zoo (seconds)
    from coin_scale.models.layers import Layout

_DEFAULT_LAYOUT: dict[int, Layout] = {4: "nchw", 3: "ntc", 2: "nc"}


def reconstruct_output(
    sae: SparseAutoencoder, out: torch.Tensor, layout: Layout | None = None
) -> torch.Tensor:
    """The SAE reconstruction of a layer output, in the output's shape and dtype.

    `layout` defaults from the rank: 4 -> nchw, 3 -> ntc, 2 -> nc (pass nhwc for Swin).
    """
    layout = layout or _DEFAULT_LAYOUT.get(out.dim())
    if layout is None:
        raise ValueError(f"cannot read tokens from a layer output of shape {tuple(out.shape)}")
    width = out.shape[1] if layout in ("nchw", "nc") else out.shape[-1]
    if width != sae.d_in:
        raise ValueError(f"the layer output has {width} channels, the SAE takes {sae.d_in}")
    dtype = sae.w_enc.dtype
    if layout == "nchw":
        batch, _, height, w = out.shape
        recon = sae(tokens_from_conv(out).to(dtype))
        return conv_from_tokens(recon, batch, height, w).to(out.dtype)
    return sae(out.reshape(-1, width).to(dtype)).reshape(out.shape).to(out.dtype)


def replaced_forward(
    module: nn.Module,
    layer_name: str,
    sae: SparseAutoencoder,
    inputs: torch.Tensor,
    *,
    layout: Layout | None = None,
) -> torch.Tensor:
    """The module's output on `inputs` with `layer_name`'s output replaced by its reconstruction
    (the SAE in inference mode; the module's own mode is left as it is)."""
    named = dict(module.named_modules())
    if layer_name not in named:
        raise ValueError(f"the model has no module {layer_name!r}")

    def hook(_m: nn.Module, _i: object, out: object) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer {layer_name!r} does not output one tensor")
        return reconstruct_output(sae, out, layout)

    was_training = sae.training
    sae.eval()
    handle = named[layer_name].register_forward_hook(hook)
    try:
        return module(inputs)
    finally:
        handle.remove()
        sae.train(was_training)


@torch.inference_mode()
def replacement_metrics(
    module: nn.Module,
    layer_name: str,
    sae: SparseAutoencoder,
    batches: Iterable[torch.Tensor],
    *,
    layout: Layout | None = None,
) -> dict[str, float]:
    """Top-1 agreement with the original prediction and mean KL(original || replaced) of the
    output distribution, over batches of preprocessed images (module in eval mode)."""
    module.eval()
    images, agree_sum, kl_sum = 0, 0.0, 0.0
    for inputs in batches:
        original = module(inputs)
        replaced = replaced_forward(module, layer_name, sae, inputs, layout=layout)
        agree, kl = replacement_agreement(original, replaced)
        images += inputs.shape[0]
        agree_sum += agree * inputs.shape[0]
        kl_sum += kl * inputs.shape[0]
    if images == 0:
        raise ValueError("no images to measure the replacement on")
    return {"top1_agreement": agree_sum / images, "kl": kl_sum / images, "images": float(images)}
