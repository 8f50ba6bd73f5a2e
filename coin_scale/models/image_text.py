"""An image-text model (open_clip) that scores probe images against concept words: the
concept source of the photo explainers (issue 18), with its embeddings cached.

`ImageTextModel(ImageTextSource(model="ViT-B-32", weights=...))`:
- `weights="default"`: the architecture's standard pretrained tag (`openai` where it has one),
  read from the Hugging Face cache, downloaded there on first use when the network allows; when
  it is neither cached nor reachable, one `ValueError` line names the model, the file expected and
  `--clip-weights PATH` (checked in seconds, before any work);
- `weights=PATH`: a local open_clip checkpoint of that architecture;
- `weights="none"`: random weights, for tests only (a warning says so).

Embeddings are L2-normalised float32. `text_embeddings` are cached per (model, weights,
vocabulary) and `image_embeddings` per (model, weights, probe content) under the cache root
(`coin_scale.cache.cache_root() / "image_text"`), so a vocabulary of thousands of words is encoded
once and every later run reads it. `concept_similarity` is their product: (image, concept) cosine
similarities, NaN rows for unreadable images.

Images are encoded where the caller says: `image_embeddings(..., open_encoders=...)` encodes
them on a pool of image-text replicas (Ray actors of their own, one per GPU where there are
GPUs; `coin_scale.actors.image_text`, started by `coin_scale.runtime.pools`), batched, each
replica building the same model from the same `ImageTextSource`; without `open_encoders` (tests
of the core, the synthetic evaluation) they are encoded in this process. The texts (a few
thousand words, cached once per vocabulary) are encoded in this process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from coin_scale.cache import cache_root

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
HUB_HOST = ("huggingface.co", 443)
"""Where open_clip's pretrained weights are downloaded from."""


@dataclass(frozen=True, kw_only=True)
class ImageTextSource:
    """Which image-text model: an open_clip architecture and its weights."""

    model: str = DEFAULT_MODEL
    """An open_clip architecture name (`open_clip.list_models()`), e.g. ViT-B-32, RN50, or a
    local open_clip model config (`NAME.json`: embed_dim, vision_cfg, text_cfg), registered as
    NAME where the model is built (so image-text replicas on other nodes need the same path)."""
    weights: str = "default"
    """default (the standard pretrained tag, cached or downloaded) | none (random, tests only) |
    PATH (a local open_clip checkpoint of the architecture)."""
    seed: int = 0
    """Seed of random weights."""


def _architectures() -> list[str]:
    import open_clip

    return list(open_clip.list_models())


def architecture(model: str) -> tuple[str, str]:
    """(open_clip architecture name, cache key part) of `ImageTextSource.model`: a name as is, or
    a local model config file registered with open_clip under its stem (its key part also names
    the file's content, so an edited config is not read from an old cache); ValueError when the
    file is missing or not an open_clip config."""
    if not model.endswith(".json"):
        return model, model
    import json

    import open_clip

    path = Path(model).expanduser()
    if not path.is_file():
        raise ValueError(f"open_clip model config {model}: no such file")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"open_clip model config {model}: not JSON ({err})") from None
    if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= config.keys():
        raise ValueError(
            f"open_clip model config {model}: expected the keys embed_dim, vision_cfg and text_cfg"
        )
    open_clip.add_model_config(path)
    digest = hashlib.blake2b(path.read_bytes(), digest_size=4).hexdigest()
    return path.stem, f"{path.stem}-{digest}"


def _default_tag(model: str) -> str | None:
    import open_clip

    tags = list(open_clip.list_pretrained_tags_by_model(model))
    return "openai" if "openai" in tags else (tags[0] if tags else None)


def _hub_file(model: str, tag: str) -> tuple[str, str] | None:
    """(repo id, file name) of a pretrained tag on the Hugging Face hub, when it is there."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    repo = str(cfg.get("hf_hub", "")).strip("/")
    if not repo:
        return None
    return repo, "open_clip_pytorch_model.bin"


def _cached(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for name in (filename, "open_clip_model.safetensors"):
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return True
    return False


def _reachable(host: tuple[str, int], timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


class WeightsUnavailable(ValueError):
    """Pretrained weights that are neither cached nor downloadable from here."""


def hub_file_available(repo: str, *filenames: str) -> bool:
    """Whether one of a hub repository's files is in the Hugging Face cache, or the hub can be
    reached from here to download it (a socket test of seconds, not the hub's long retries)."""
    return any(_cached(repo, name) for name in filenames) or _reachable(HUB_HOST)


def reachable(host: tuple[str, int]) -> bool:
    """Whether (host, port) accepts a connection within seconds."""
    return _reachable(host)


def pretrained_tag(model: str, tag: str | None = None, *, flag: str = "--clip-weights") -> str:
    """`tag` of open_clip `model` (default: its standard one, `openai` where it has one), checked
    in seconds to be cached or downloadable; a one-line ValueError otherwise (WeightsUnavailable
    when offline) naming the model, the file expected and `flag PATH`."""
    tag = tag or _default_tag(model)
    if tag is None:
        raise ValueError(
            f"open_clip {model} has no pretrained weights to download; pass {flag} PATH"
        )
    hub = _hub_file(model, tag)
    if hub is not None and not hub_file_available(*hub):
        repo, filename = hub
        raise WeightsUnavailable(
            f"the weights of open_clip {model} ({tag}) are not in the Hugging Face cache "
            f"({repo}/{filename}) and cannot be downloaded from here: pass {flag} "
            f"PATH (a local open_clip checkpoint), or {flag} none for random weights "
            "(tests only)"
        )
    return tag


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """What an image-text replica returns for one batch of (image index, path) pairs."""

    batch_id: int
    indices: np.ndarray
    """int64 (n,) indices of the images that decoded and ran."""
    embeddings: np.ndarray
    """float32 (n, dim), L2-normalised, in `indices`' order."""
    failures: list[tuple[int, str]]
    """(index, why) of the images that could not be read."""
    seconds: float
    weights: str
    """`ImageTextModel.fingerprint()` of the replica's model: the caller checks that it encoded
    the texts with the same weights."""


class EmbeddingRunner(Protocol):
    """Image-text replicas, ready: `embed` yields every batch's result once, in completion order."""

    def embed(self, batches: Sequence[Sequence[tuple[int, str]]]) -> Iterator[EmbeddingResult]: ...


OpenEncoders = Callable[[ImageTextSource], AbstractContextManager[EmbeddingRunner]]
"""Starts image-text replicas of a source, yields them ready, and stops them on exit
(`coin_scale.runtime.pools.image_text_opener`); called only when there are images to encode."""

IMAGE_BATCH = 32
"""Images per batch of the image tower (in process and on the replicas)."""


class ImageTextModel:
    """An open_clip model with its image preprocessing and tokenizer, in eval mode."""

    def __init__(self, source: ImageTextSource | None = None, *, device: str = "cpu") -> None:
        """`device`: where the model runs (an image-text replica on a GPU passes `cuda`)."""
        import open_clip

        self.source = source = source or ImageTextSource()
        self.arch, self._key_arch = architecture(source.model)
        if self.arch not in _architectures():
            import difflib

            close = difflib.get_close_matches(self.arch, _architectures(), n=3)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ValueError(f"unknown open_clip model {source.model!r}{hint}")
        pretrained: str | None
        if source.weights == "none":
            log.warning(
                "--clip-weights none: the image-text model %s has RANDOM weights; its concept "
                "scores mean nothing (tests only)", self.arch,
            )  # fmt: skip
            torch.manual_seed(source.seed)
            pretrained, self.weights_id = None, f"none-seed{source.seed}"
        elif source.weights == "default":
            pretrained = self._default_weights()
            self.weights_id = pretrained
        else:
            path = Path(source.weights).expanduser()
            if not path.is_file():
                raise ValueError(f"--clip-weights {path}: no such file")
            pretrained = str(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            self.weights_id = f"file-{digest}"
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.arch, pretrained=pretrained
            )
        except RuntimeError as err:  # a checkpoint of another architecture, a corrupt file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"--clip-weights {source.weights}: not weights of open_clip {self.arch} ({first[:200]})"
            ) from None
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(self.arch)
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """A digest of the weights (every parameter's sum and its first values): a replica
        that built the model from the same source has the same one."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=8)
            with torch.no_grad():
                for name, param in self.model.state_dict().items():
                    flat = param.detach().float().flatten().cpu()
                    digest.update(name.encode())
                    digest.update(np.float64(flat.double().sum()).round(4).tobytes())
                    digest.update(flat[:4].numpy().round(5).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _default_weights(self) -> str:
        return pretrained_tag(self.arch)

    @property
    def input_size(self) -> int:
        """Side of the square images the image tower takes (224 for ViT-B-32)."""
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def key(self) -> str:
        """What the embedding caches are keyed by: the architecture and the weights."""
        return f"{self._key_arch}-{self.weights_id}"

    @torch.inference_mode()
    def encode_texts(self, concepts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
        """float32 (concept, dim), L2-normalised; each concept's words as the text."""
        out = []
        for start in range(0, len(concepts), batch_size):
            tokens = self.tokenizer(list(concepts[start : start + batch_size])).to(self.device)
            out.append(torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1))
        return torch.cat(out).cpu() if out else torch.zeros(0, 0)

    @torch.inference_mode()
    def embed_batch(self, batch_id: int, items: Sequence[tuple[int, str]]) -> EmbeddingResult:
        """One replica batch: the readable images of (index, path) `items`, decoded and encoded."""
        start = time.perf_counter()
        indices = [index for index, _ in items]
        batch, where, failures = self._load_reporting([path for _, path in items])
        embeddings = np.zeros((0, 0), dtype=np.float32)
        if batch:
            pixels = torch.stack(batch).to(self.device, non_blocking=True)
            emb = torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)
            embeddings = emb.cpu().numpy()
        return EmbeddingResult(
            batch_id=batch_id, indices=np.asarray([indices[i] for i in where], dtype=np.int64),
            embeddings=embeddings, failures=[(indices[i], why) for i, why in failures],
            seconds=time.perf_counter() - start, weights=self.fingerprint(),
        )  # fmt: skip

    def encode_images(self, paths: Sequence[str], *, batch_size: int = IMAGE_BATCH) -> torch.Tensor:
        """float32 (image, dim), L2-normalised, in this process (the replicas' work, one batch
        after another); a row of NaN for an image that cannot be read."""
        batches = _batches(paths, batch_size)
        return _assemble((self.embed_batch(i, batch) for i, batch in enumerate(batches)), len(paths))

    def _load_reporting(
        self, paths: Sequence[str]
    ) -> tuple[list[torch.Tensor], list[int], list[tuple[int, str]]]:
        """(preprocessed images, their positions in `paths`, (position, why) of the unreadable)."""
        batch, where, failures = [], [], []
        for i, path in enumerate(paths):
            try:
                with Image.open(path) as image:
                    if image.format == "JPEG":  # decode at a reduced scale when it is larger
                        image.draft("RGB", (self.input_size, self.input_size))
                    batch.append(self.preprocess(image.convert("RGB")))
                where.append(i)
            except (OSError, UnidentifiedImageError, ValueError) as err:
                log.debug("image-text model: cannot read %s: %s", path, err)
                failures.append((i, f"{type(err).__name__}: {err}"[:200]))
        return batch, where, failures


def _cache_file(kind: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return cache_root() / "image_text" / kind / f"{safe}.npy"


def _cached_array(path: Path, make: Any) -> torch.Tensor:
    if path.is_file():
        return torch.from_numpy(np.load(path))
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")  # one per writer
    np.save(tmp, value.numpy())
    tmp.replace(path)  # atomic: a reader sees the whole file or none
    return value


def text_embeddings(model: ImageTextModel, concepts: Sequence[str], fingerprint: str) -> torch.Tensor:
    """(concept, dim) embeddings of a vocabulary, cached per model, weights and vocabulary."""
    path = _cache_file("text", f"{model.key}-{fingerprint[:32]}")
    return _cached_array(path, lambda: model.encode_texts(concepts))


def image_embeddings(
    model: ImageTextModel,
    paths: Sequence[str],
    probe_id: str,
    *,
    open_encoders: OpenEncoders | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """(image, dim) embeddings of a probe set, cached per model, weights and probe content;
    encoded on the replicas `open_encoders` starts (in this process without it)."""
    path = _cache_file("images", f"{model.key}-{probe_id}")
    if open_encoders is None:
        return _cached_array(path, lambda: model.encode_images(paths))
    return _cached_array(
        path, lambda: encode_on_replicas(model, paths, open_encoders, progress=progress)
    )


def encode_on_replicas(
    model: ImageTextModel,
    paths: Sequence[str],
    open_encoders: OpenEncoders,
    *,
    batch_size: int = IMAGE_BATCH,
    progress: bool = False,
) -> torch.Tensor:
    """float32 (image, dim) embeddings of `paths` computed by image-text replicas of `model`'s
    source, a NaN row for an unreadable image; `ValueError` when none could be read, and when a
    replica's weights are not `model`'s (its texts would not be comparable)."""
    from tqdm import tqdm

    batches = _batches(paths, batch_size)

    def checked(results: Iterator[EmbeddingResult], bar: Any) -> Iterator[EmbeddingResult]:
        for result in results:
            if result.weights != model.fingerprint():
                raise ValueError(
                    f"an image-text replica built {model.arch} with other weights "
                    f"({result.weights}, here {model.fingerprint()}): is --clip-weights the same "
                    "file on every node?"
                )
            bar.update(len(result.indices) + len(result.failures))
            yield result

    with open_encoders(model.source) as replicas, tqdm(
        total=len(paths), unit="img", desc="image-text embeddings", disable=not progress,
        dynamic_ncols=True,
    ) as bar:  # fmt: skip
        return _assemble(checked(replicas.embed(batches), bar), len(paths))


def _batches(paths: Sequence[str], batch_size: int) -> list[list[tuple[int, str]]]:
    """(index, path) batches of `paths`."""
    items = list(enumerate(paths))
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def _assemble(results: Iterator[EmbeddingResult], n: int) -> torch.Tensor:
    """float32 (n, dim) of batch results in any order, NaN rows for the images none returned;
    ValueError when no image could be read."""
    rows: np.ndarray | None = None
    for result in results:
        if len(result.indices):
            if rows is None:
                rows = np.full((n, result.embeddings.shape[1]), np.nan, np.float32)
            rows[result.indices] = result.embeddings
    if rows is None:
        raise ValueError(f"none of the {n} images could be read")
    return torch.from_numpy(rows)


def concept_similarity(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """(image, concept) cosine similarities of normalised embeddings (NaN rows stay NaN)."""
    return images @ texts.T
