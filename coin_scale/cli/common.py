"""Flags shared by several subcommands, and YAML configs whose keys are the flags' names."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coin_scale.errors import UserError
from coin_scale.probe.split import DEFAULT_HELD_OUT


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True,
        help="torchvision classification model name (resnet18, vit_b_16, ...), timm:NAME (a timm "
        "model, e.g. timm:vit_small_patch8_224.dino), clip:ARCH (an open_clip image encoder, e.g. "
        "clip:RN50) or a coin-scale checkpoint",
    )  # fmt: skip
    parser.add_argument(
        "--weights", default="default",
        help="default (the family's pretrained weights, downloaded to its cache; torchvision's "
        "DEFAULT), none (random, for testing only), a torchvision weights enum name (IMAGENET1K_V1, "
        "the weights MAIA evaluated ResNet-152 with) or open_clip pretrained tag, or PATH to a "
        "weights file",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights (--weights none)")


def add_llm_args(parser: argparse.ArgumentParser, *, flag: str) -> None:
    """The LLM explainers' flags (provider model, endpoint, rate limits, budgets), in a group
    named after the flag that picks the provider (`--explainer` or `--explain`)."""
    llm = parser.add_argument_group(f"LLM explainers ({flag} openai|anthropic|gemini)")
    llm.add_argument("--llm-model", default=None, help="model name (default: configs/llm.yaml)")
    llm.add_argument("--base-url", default=None,
                     help="OpenAI-compatible server (vLLM, Ollama: http://localhost:11434/v1) or proxy")  # fmt: skip
    llm.add_argument("--rpm", type=float, default=None, help="requests per minute allowed")
    llm.add_argument("--tpm", type=float, default=None, help="tokens per minute allowed")
    llm.add_argument("--max-rounds", type=int, default=12, help="LLM rounds per unit at most")
    llm.add_argument("--unit-budget-usd", type=float, default=1.0, help="dollars per unit at most")
    llm.add_argument("--budget-usd", type=float, default=20.0, help="dollars in all at most")
    llm.add_argument("--unit-budget-tokens", type=int, default=200_000, help="tokens per unit at most")
    llm.add_argument("--budget-tokens", type=int, default=None, help="tokens in all at most")
    llm.add_argument("--concurrency", type=int, default=32, help="units explained at once")
    llm.add_argument("--llm-config", default=None, help="another configs/llm.yaml (prices, limits)")
    llm.add_argument(
        "--no-prompt-cache", dest="prompt_caching", action="store_false",
        help="do not mark the requests' unchanging prefix (tools, system prompt, exemplars) for "
        "the provider's prompt cache (Anthropic's cache breakpoints, OpenAI's prompt_cache_key)",
    )  # fmt: skip
    llm.add_argument(
        "--describe", nargs="?", const="default", default=None, metavar="MODEL",
        help="offer the agents describe(images) and summarize(images): a vision model's captions, "
        "through gateways of their own (default model: the provider's describe_model in "
        "configs/llm.yaml, a cheaper one)",
    )  # fmt: skip
    add_generator_args(parser)


def add_generator_args(parser: argparse.ArgumentParser) -> None:
    """What makes the LLM agents' images (`coin_scale.agent.generation`)."""
    gen = parser.add_argument_group(
        "the agents' image generator (with an LLM explainer)"
    )
    gen.add_argument(
        "--image-generator", default="procedural", choices=("procedural", "diffusion", "unity"),
        help="procedural (default: rendered scenes), unity (the player of configs/unity.yaml) "
        "or diffusion (the agents also get text2image and edit any image, photographs and "
        "exemplars included, by instruction; models from configs/diffusion.yaml or the flags "
        "below)",
    )  # fmt: skip
    gen.add_argument(
        "--diffusion-model", default=None,
        help="text-to-image model: a hub id (must be in the local cache unless "
        "--allow-downloads), a local pipeline folder, none, or tiny-random (random weights, "
        "built in memory, for both models: testing only)",
    )  # fmt: skip
    gen.add_argument("--edit-model", default=None,
                     help="instruction-editing model (InstructPix2Pix): hub id, folder or none")  # fmt: skip
    gen.add_argument("--diffusion-config", default=None,
                     help="another configs/diffusion.yaml (steps, sizes, device)")  # fmt: skip
    gen.add_argument("--unity-config", default=None, help="another configs/unity.yaml")
    gen.add_argument("--allow-downloads", action="store_true",
                     help="let the diffusion models be fetched from the Hugging Face hub")  # fmt: skip


def image_generator_of(args: argparse.Namespace) -> Any:
    """The `ImageGenerator` of `add_generator_args`' flags, checked now (one-line UserError)."""
    from coin_scale.agent.generation import image_generator

    return image_generator(
        args.image_generator, diffusion_model=args.diffusion_model, edit_model=args.edit_model,
        diffusion_config=args.diffusion_config, unity_config=args.unity_config,
        allow_downloads=args.allow_downloads,
    )  # fmt: skip


def add_clip_args(parser: argparse.ArgumentParser) -> None:
    """The image-text explainer's flags (`--explainer clip`); `--clip-model` / `--clip-weights`
    also read an LLM explainer's labels on held-out images. Their defaults are filled in by
    `clip_config`, so that `clip_given` can tell whether they were passed."""
    clip = parser.add_argument_group(
        "image-text explainers (--explainer clip, clip-formula; with an LLM explainer, "
        "--clip-model or --clip-weights score its labels on the held-out images)"
    )
    clip.add_argument("--clip-model", default=None,
                      help=f"open_clip architecture scoring images against words (default {CLIP_MODEL}), "
                      "or a local open_clip model config NAME.json")  # fmt: skip
    clip.add_argument("--clip-weights", default=None,
                      help="default (open_clip's standard weights, cached or downloaded; the default), "
                      "PATH (a local checkpoint), or none (random weights: tests only)")  # fmt: skip
    clip.add_argument("--concepts", default="photo",
                      help="vocabulary: objects, scenes, textures, materials, colors, parts, nouns, photo "
                      "(all of them, default), several joined by commas, or FILE (one concept a line)")  # fmt: skip


CLIP_MODEL = "ViT-B-32"
"""`--clip-model`'s default (`coin_scale.models.image_text.DEFAULT_MODEL`)."""


def clip_given(args: argparse.Namespace) -> bool:
    """Whether `--clip-model` or `--clip-weights` was passed (on the command line or in a
    `--config` file)."""
    return args.clip_model is not None or args.clip_weights is not None


def clip_config(args: argparse.Namespace) -> Any:
    """The `ClipExplainerConfig` of `add_clip_args`' flags, defaults filled in."""
    from coin_scale.explain.image_text import ClipExplainerConfig

    return ClipExplainerConfig(
        model=args.clip_model or CLIP_MODEL, weights=args.clip_weights or "default",
        concepts=args.concepts,
    )  # fmt: skip


def image_text_encoders(args: argparse.Namespace) -> Any:
    """Where a probe's images are encoded for the image-text model: its own replicas on the Ray
    cluster of `--address` (`--replicas` of them where the command has the flag)."""
    from coin_scale.runtime.pools import image_text_opener

    return image_text_opener(address=args.address, replicas=getattr(args, "replicas", None))


def clip_explainer(args: argparse.Namespace) -> Any:
    """The image-text explainer (`clip` or `clip-formula`) of `add_clip_args`' flags, its model
    and vocabulary loaded; a bad one is a one-line UserError."""
    from coin_scale.explain.image_text import image_text_explainer

    try:
        return image_text_explainer(
            args.explainer, clip_config(args), open_encoders=image_text_encoders(args)
        )
    except ValueError as err:
        raise UserError(f"--explainer {args.explainer}: {err}") from None


def add_held_out_arg(parser: argparse.ArgumentParser) -> None:
    """`--held-out`: the share of a folder probe's images held out from the explainer."""
    parser.add_argument(
        "--held-out", type=float, default=DEFAULT_HELD_OUT, metavar="SHARE",
        help="share of a folder probe's images (chosen by a hash of each path) that the explainer "
        "never sees; every explanation is scored on them: AUC, Pearson r, F1, AUPRC, stored in "
        "scores (test heldout). Default 0.2; 0: none held out, no such scores",
    )  # fmt: skip


def llm_settings(args: argparse.Namespace, provider: str, cache_dir: str) -> Any:
    """The `LLMExplainerConfig` of `add_llm_args`' flags (never the key)."""
    from coin_scale.explain.llm import LLMExplainerConfig

    return LLMExplainerConfig(
        provider=provider, model=args.llm_model, base_url=args.base_url,
        requests_per_minute=args.rpm, tokens_per_minute=args.tpm, max_rounds=args.max_rounds,
        unit_budget_usd=args.unit_budget_usd, sweep_budget_usd=args.budget_usd,
        unit_budget_tokens=args.unit_budget_tokens, sweep_budget_tokens=args.budget_tokens,
        concurrency=args.concurrency, cache_dir=cache_dir, settings_path=args.llm_config,
        describe=args.describe, prompt_caching=getattr(args, "prompt_caching", True),
    )  # fmt: skip


def add_warehouse_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warehouse", default="warehouse", help="Parquet warehouse directory (default ./warehouse)"
    )


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None,
        help="YAML file whose keys are this command's flags (dashes or underscores); flags given "
        "on the command line win",
    )  # fmt: skip


def load_config(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a YAML config and check every key is a flag of `parser`."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {file} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {file} must be a mapping of flag names to values")
    known = {a.dest for a in parser._actions if a.dest not in ("help", "config")}
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"config file {file} has unknown key(s) {', '.join(unknown)}; valid keys: "
            + ", ".join(sorted(known))
        )
    return values
