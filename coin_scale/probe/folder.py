"""A folder of images as a probe set: recursive listing, labels and a content hash."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from coin_scale.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
_WNID_NAME = re.compile(r"^n\d{8}_(?P<name>.+)$")
RENDERED_ATTRIBUTES = "attributes.parquet"


@dataclass(frozen=True, slots=True)
class ProbeImage:
    """One image of a probe set."""

    index: int
    """Position in the sorted listing; stable for the same folder content."""
    path: str
    """Absolute path of the file."""
    label: str | None
    """From a `<wnid>_<name>` file name, else the parent folder's name; None at the top level."""
    bytes: int


@dataclass(frozen=True, slots=True)
class ProbeSet:
    """A scanned folder. `probe_id` hashes every file's relative path and bytes."""

    root: str
    probe_id: str
    images: tuple[ProbeImage, ...]
    attributes_path: str | None = None
    """`attributes.parquet` of a rendered probe set (ground-truth attributes per image), if any."""

    def __len__(self) -> int:
        return len(self.images)


def label_for(relative: Path) -> str | None:
    """`n02123045_tabby.JPEG` -> `tabby`; `cats/x.png` -> `cats`; `x.png` -> None."""
    match = _WNID_NAME.match(relative.stem)
    if match:
        return match.group("name")
    if len(relative.parts) > 1:
        return relative.parts[-2]
    return None


def scan_probe(root: str | Path) -> ProbeSet:
    """List the images under `root` (JPEG, PNG, WebP, any depth), sorted, with a content hash."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"probe folder {root} does not exist")
    if not root.is_dir():
        raise UserError(f"--probe {root} is not a folder of images")
    files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise UserError(
            f"probe folder {root} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))}"
            " at any depth)"
        )
    attributes = root / RENDERED_ATTRIBUTES
    rendered = attributes.is_file()
    digest = hashlib.blake2b(digest_size=16)
    images = []
    for index, path in enumerate(files):
        relative = path.relative_to(root)
        data = path.read_bytes()
        digest.update(str(relative).encode() + b"\0" + hashlib.blake2b(data, digest_size=16).digest())
        # A rendered set's images share one folder; their concepts are in attributes.parquet.
        label = None if rendered else label_for(relative)
        images.append(ProbeImage(index, str(path.resolve()), label, len(data)))
    return ProbeSet(
        root=str(root.resolve()),
        probe_id=digest.hexdigest()[:16],
        images=tuple(images),
        attributes_path=str(attributes.resolve()) if rendered else None,
    )
