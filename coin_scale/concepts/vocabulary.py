"""Concept vocabularies for photographs: the words an image-text model scores every probe image
against, shipped with the package or given by the user (`--concepts FILE`, one concept a line).

Shipped (`SHIPPED`), each with its source and licence in its file's header (`vocabularies/`):
`objects` (ImageNet-1k's 1,000 class names, as torchvision's weights metadata carries them),
`scenes` (Places365's 365 categories), `textures` (the Describable Textures Dataset's 47),
`materials` (MINC's 22), `colors` (20), `parts` (60) and `nouns` (3,000 common English nouns
for things one can see, from WordNet 3.0 ranked by word frequency;
`scripts/make_nouns_vocabulary.py` builds it). `photo` is all of them together.

A vocabulary's concepts are stripped, their inner spaces collapsed, and each kept once (case
matters: ImageNet's 'Cardigan' is a corgi, its 'cardigan' a sweater); blank lines and `#` comments are skipped. An empty vocabulary
or a missing file is a `ValueError` that names it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SHIPPED_FILES = {
    "scenes": "places365.txt",
    "textures": "textures.txt",
    "materials": "materials.txt",
    "colors": "colors.txt",
    "parts": "parts.txt",
    "nouns": "nouns.txt",
}
"""The shipped vocabularies kept as files under `coin_scale/concepts/vocabularies/`."""
SHIPPED: tuple[str, ...] = ("objects", *SHIPPED_FILES)
"""Every shipped vocabulary's name."""
ALL_FOR_PHOTOS = "photo"
"""The name of the union of every shipped vocabulary."""

OBJECTS_SOURCE = (
    "ImageNet-1k's class names (Deng et al., CVPR 2009; Russakovsky et al., IJCV 2015), as "
    "torchvision's weights metadata lists them"
)
OBJECTS_LICENCE = "the class names of a research dataset, used as words with this attribution"


@dataclass(frozen=True, kw_only=True)
class Vocabulary:
    """Concepts to score images against, with where they come from."""

    name: str
    """A shipped name, a path, or a comma-joined list of them."""
    concepts: tuple[str, ...]
    source: str
    licence: str
    duplicates: int = 0
    """Concepts given more than once (kept once)."""

    def __len__(self) -> int:
        return len(self.concepts)

    @property
    def fingerprint(self) -> str:
        """sha256 of the concepts in order: what a cache of their text embeddings is keyed by."""
        return hashlib.sha256("\n".join(self.concepts).encode()).hexdigest()


def load_vocabulary(spec: str) -> Vocabulary:
    """`spec`: a shipped name (`SHIPPED`), `photo` (all of them), a file with one concept a line,
    or several of these joined by commas (their union, in order)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError("no vocabulary named; expected a file or one of " + ", ".join(_choices()))
    if len(parts) == 1 and parts[0] != ALL_FOR_PHOTOS:
        return _load_one(parts[0])
    names = [n for p in parts for n in (SHIPPED if p == ALL_FOR_PHOTOS else (p,))]
    loaded = [_load_one(n) for n in names]
    concepts, duplicates = _unique(c for v in loaded for c in v.concepts)
    return Vocabulary(
        name=spec, concepts=concepts,
        source="; ".join(f"{v.name}: {v.source}" for v in loaded),
        licence="; ".join(f"{v.name}: {v.licence}" for v in loaded),
        duplicates=duplicates + sum(v.duplicates for v in loaded),
    )  # fmt: skip


def parse_concepts(lines: Iterable[str]) -> tuple[tuple[str, ...], int, dict[str, str]]:
    """(the concepts, how many were duplicates, the `# key: value` header fields) of a file's
    lines."""
    header: dict[str, str] = {}
    key = None
    words = []
    for raw in lines:
        line = raw.strip()
        if line.startswith("#"):
            text = line[1:].strip()
            found = re.match(r"([a-z]+):\s*(.*)", text)
            if found:
                key = found.group(1)
                header[key] = found.group(2)
            elif key and raw.startswith("#  ") and text:
                header[key] += " " + text  # a continuation line
            continue
        key = None
        if line:
            words.append(" ".join(line.split()))
    concepts, duplicates = _unique(words)
    return concepts, duplicates, header


def _unique(words: Iterable[str]) -> tuple[tuple[str, ...], int]:
    seen: dict[str, str] = {}  # insertion-ordered
    total = 0
    for word in words:
        total += 1
        seen.setdefault(word, word)
    return tuple(seen.values()), total - len(seen)


def _choices() -> list[str]:
    return [*SHIPPED, ALL_FOR_PHOTOS]


def _load_one(name: str) -> Vocabulary:
    if name == "objects":
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        concepts, duplicates = _unique(_IMAGENET_CATEGORIES)
        return Vocabulary(
            name=name, concepts=concepts, source=OBJECTS_SOURCE, licence=OBJECTS_LICENCE,
            duplicates=duplicates,
        )  # fmt: skip
    if name in SHIPPED_FILES:
        text = (
            resources.files("coin_scale.concepts")
            .joinpath("vocabularies", SHIPPED_FILES[name])
            .read_text(encoding="utf-8")
        )
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(
                f"vocabulary {name!r} is neither a file nor one of {', '.join(_choices())}"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"vocabulary file {path} cannot be read as text: {err}") from None
    concepts, duplicates, header = parse_concepts(text.splitlines())
    if not concepts:
        raise ValueError(f"vocabulary {name!r} has no concepts (one concept a line; # comments)")
    return Vocabulary(
        name=name, concepts=concepts, source=header.get("source", "given by the user"),
        licence=header.get("licence", "the user's"), duplicates=duplicates,
    )  # fmt: skip
