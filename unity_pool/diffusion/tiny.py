"""`tiny-random`: testing-size diffusers pipelines with random weights, built in memory.

`text2image.model: tiny-random` (or `--diffusion-model tiny-random`) gives a Stable Diffusion
pipeline, and `edit.model: tiny-random` an InstructPix2Pix one, each a few hundred thousand
parameters (a one-layer CLIP text encoder with a character-level tokenizer, a two-block UNet and
VAE). They run the real diffusers code path (schedulers, guidance, VAE decode) in a fraction of a
second at 64x64 on a CPU and need no download, so tests and the offline demo exercise image
generation end to end. **Their images are noise-like and mean nothing**: testing only.

The weights come from a fixed seed, so every process builds the same pipeline.
"""

from __future__ import annotations

from typing import Any

TINY_RANDOM = "tiny-random"
"""The model name that selects these pipelines."""

TINY_SEED = 0
"""Seed of the random weights."""

TINY_SIDE = 64
"""A size they are meant for (any multiple of 8 works)."""


def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    # every printable ASCII character, alone and word-final, and no merges
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for code in range(33, 127):
            vocab[chr(code) + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def tiny_components(in_channels: int) -> dict[str, Any]:
    """The components of a tiny Stable Diffusion pipeline whose UNet takes `in_channels` (4 for
    text-to-image, 8 for InstructPix2Pix), random weights from the global torch generator."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()), hidden_size=16, intermediate_size=32,
            num_attention_heads=2, num_hidden_layers=1, max_position_embeddings=16,
            projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    )  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4,
        norm_num_groups=4, sample_size=32,
    )  # fmt: skip
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        timestep_spacing="trailing", steps_offset=1,
    )  # fmt: skip
    return {
        "unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
        "scheduler": scheduler, "safety_checker": None, "feature_extractor": None,
        "requires_safety_checker": False,
    }  # fmt: skip


PIPELINE_CLASSES = {
    "text2image": ("StableDiffusionPipeline", 4),
    "edit": ("StableDiffusionInstructPix2PixPipeline", 8),
}
"""Per pipeline kind: the diffusers class and its UNet's input channels."""


def tiny_pipeline(kind: str) -> Any:
    """The tiny `kind` ("text2image" or "edit") pipeline, its weights drawn from `TINY_SEED`
    without touching the caller's random state."""
    import diffusers
    import torch

    if kind not in PIPELINE_CLASSES:
        raise ValueError(f"no tiny pipeline of kind {kind!r}; expected one of {', '.join(PIPELINE_CLASSES)}")
    class_name, channels = PIPELINE_CLASSES[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        components = tiny_components(channels)
    return getattr(diffusers, class_name)(**components)
