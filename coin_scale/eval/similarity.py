"""Perceptual similarities for MIS: a one-method protocol, DreamSim and LPIPS adapters, a registry.

DreamSim (the MIS paper's choice) and LPIPS are optional: `pip install 'coin-scale[mis]'`. Each is
imported when loaded, never at import time; a missing package or missing weights raise a one-line
`ResourceError` naming the extra or the weights path. There is no fallback to another similarity.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from coin_scale.errors import ResourceError, UserError

if TYPE_CHECKING:
    import torch
    from PIL import Image

EXTRA = "pip install 'coin-scale[mis]'"
"""How to install the optional similarities."""


class Similarity(Protocol):
    """Pairwise similarity of two lists of images: larger means more alike."""

    def __call__(self, a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        """(len(a), len(b)) float similarities."""
        ...


SimilarityLoader = Callable[[str | None], Similarity]
"""(weights cache directory or None for the default) -> a loaded similarity."""


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _require(package: str, name: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ResourceError(
            f"similarity {name} needs the {package} package, which is not installed; {EXTRA} "
            "(no other similarity is substituted)"
        )


def content_key(image: Image.Image) -> str:
    """A digest of the image's pixels, size and mode: equal images share it, whatever their path."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


class DreamSimSimilarity:
    """DreamSim's similarity: the cosine of its embeddings (DreamSim distance = 1 - cosine).

    Each distinct image (by content, `content_key`) is embedded once for the life of the object,
    so a layer's units, whose tasks draw from the same probe images, share the embeddings
    (`embedded` counts the images embedded, `reused` those answered from the cache)."""

    def __init__(self, model: Any, preprocess: Callable[[Image.Image], torch.Tensor], device: str):
        self.model = model
        self.preprocess = preprocess
        self.device = device
        self._cache: dict[str, torch.Tensor] = {}
        self.embedded = 0
        self.reused = 0

    def _embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import torch

        keys = [content_key(im) for im in images]
        first: dict[str, int] = {}  # each image not embedded yet, at its first position
        for i, k in enumerate(keys):
            if k not in self._cache and k not in first:
                first[k] = i
        new = list(first.values())
        with torch.inference_mode():
            for start in range(0, len(new), 32):
                chunk = new[start : start + 32]
                batch = torch.cat([self.preprocess(images[i]) for i in chunk])
                out = self.model.embed(batch.to(self.device)).float()
                out = torch.nn.functional.normalize(out, dim=-1)
                for i, row in zip(chunk, out, strict=True):
                    self._cache[keys[i]] = row
        self.embedded += len(new)
        self.reused += len(keys) - len(new)
        return torch.stack([self._cache[k] for k in keys])

    def __call__(self, a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        return (self._embed(a) @ self._embed(b).T).cpu().numpy()


def dreamsim_cache(cache: str | None = None) -> Path:
    """Where DreamSim's weights are read from (downloaded to on first use with a network)."""
    from coin_scale.cache import cache_root

    return Path(cache) if cache else cache_root() / "dreamsim"


def load_dreamsim(cache: str | None = None) -> Similarity:
    """DreamSim (ensemble) with weights from `cache`; a ResourceError if missing or unloadable."""
    _require("dreamsim", "dreamsim")
    from dreamsim import dreamsim

    root = dreamsim_cache(cache)
    device = _device()
    try:
        model, preprocess = dreamsim(pretrained=True, device=device, cache_dir=str(root))
    except Exception as err:  # download or load failures, offline: one line naming the path
        raise ResourceError(
            f"similarity dreamsim: its weights are not in {root} and could not be fetched "
            f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}); run "
            f"once with network access or copy the DreamSim checkpoints into {root} "
            "(--similarity-cache DIR)"
        ) from None
    return DreamSimSimilarity(model, preprocess, device)


class LPIPSSimilarity:
    """LPIPS as a similarity: minus the LPIPS distance of every pair (images at `size` px)."""

    def __init__(self, metric: Any, device: str, size: int = 224):
        self.metric = metric
        self.device = device
        self.size = size

    def _tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import torch
        from torchvision.transforms.functional import pil_to_tensor, resize

        pixels = [resize(pil_to_tensor(im.convert("RGB")), [self.size, self.size]) for im in images]
        return (torch.stack(pixels).float() / 127.5 - 1.0).to(self.device)  # LPIPS wants [-1, 1]

    def __call__(self, a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        import torch

        ta, tb = self._tensor(a), self._tensor(b)
        out = np.empty((len(a), len(b)))
        with torch.inference_mode():
            for i in range(len(a)):
                d = self.metric(ta[i : i + 1].expand(len(b), -1, -1, -1), tb)
                out[i] = -d.reshape(len(b)).float().cpu().numpy()
        return out


ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""torchvision's AlexNet weights, LPIPS's default backbone (its linear heads ship with lpips)."""


def lpips_cache(cache: str | None = None) -> Path:
    """The torch hub checkpoints folder LPIPS reads AlexNet's weights from (`cache`: a torch hub
    directory used instead of the default one)."""
    import torch

    return Path(cache or torch.hub.get_dir()) / "checkpoints"


def load_lpips(cache: str | None = None) -> Similarity:
    """LPIPS (AlexNet); a ResourceError if the package or the AlexNet weights are missing."""
    _require("lpips", "lpips")
    import lpips

    folder = lpips_cache(cache)
    _require_lpips_weights(cache)
    if cache:
        import torch

        torch.hub.set_dir(cache)
    device = _device()
    try:
        metric = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    except Exception as err:
        raise ResourceError(
            f"similarity lpips: could not load ({type(err).__name__}); weights expected in {folder}"
        ) from None
    return LPIPSSimilarity(metric, device)


SIMILARITIES: dict[str, SimilarityLoader] = {"dreamsim": load_dreamsim, "lpips": load_lpips}
"""Similarities by `--similarity` name."""

PACKAGES = {"dreamsim": "dreamsim", "lpips": "lpips"}
"""The package each named similarity needs (checked before any work: `check_similarity`)."""


def check_similarity(name: str, cache: str | None = None) -> SimilarityLoader:
    """The loader of the similarity called `name`, after the checks that need no model: a known
    name, its package installed, LPIPS's AlexNet weights on disk (DreamSim's checkpoints are
    fetched or read when it loads, on its replica). Unknown names list the valid ones."""
    loader = SIMILARITIES.get(name)
    if loader is None:
        raise UserError(
            f"unknown similarity {name!r}; expected one of {', '.join(sorted(SIMILARITIES))}"
        )
    if name in PACKAGES:
        _require(PACKAGES[name], name)
    if name == "lpips":
        _require_lpips_weights(cache)
    return loader


def _require_lpips_weights(cache: str | None) -> None:
    weights = lpips_cache(cache) / ALEXNET_FILE
    if not weights.is_file():
        raise ResourceError(
            f"similarity lpips: AlexNet weights {weights} are missing; run once with network "
            f"access (torchvision downloads them) or copy {ALEXNET_FILE} there "
            "(--similarity-cache DIR)"
        )


@dataclass(frozen=True)
class SimilarityWork:
    """What a similarity replica holds, as plain picklable data: the loader (a top-level
    function, by name), its weights cache and the probe images' paths it compares by index."""

    loader: SimilarityLoader
    cache: str | None
    paths: tuple[str, ...]


class IndexedSimilarity:
    """A `Similarity` over probe image indices: each image is read once, by its path, and handed
    to `inner` (which keeps its own embeddings, DreamSim by content)."""

    def __init__(self, paths: Sequence[str], inner: Similarity) -> None:
        self.paths = list(paths)
        self.inner = inner
        self._images: dict[int, Any] = {}

    def _image(self, i: int) -> Any:
        from PIL import Image

        if i not in self._images:
            with Image.open(self.paths[i]) as im:
                self._images[i] = im.convert("RGB")
        return self._images[i]

    def __call__(self, a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        return self.inner([self._image(int(i)) for i in a], [self._image(int(i)) for i in b])


def indexed_similarity(work: SimilarityWork) -> IndexedSimilarity:
    """The similarity a replica builds from its work (loading the model's weights)."""
    return IndexedSimilarity(work.paths, work.loader(work.cache))


def load_similarity(name: str, cache: str | None = None) -> Similarity:
    """The similarity called `name`, loaded in this process (`check_similarity` first)."""
    return check_similarity(name, cache)(cache)
