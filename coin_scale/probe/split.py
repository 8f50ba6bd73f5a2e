"""The held-out split of a folder probe: the images an explainer never sees, on which its
explanations are scored (`coin_scale.eval.heldout`).

Each image's side is a pure function of its path relative to the probe folder: the first 8 bytes
of its BLAKE2b hash, read as a number in [0, 1), below the held-out share puts it on the held-out
side. So the same image is always on the same side (whatever else the folder holds, in whichever
order it is listed), adding images never moves the others, and a larger share only moves images
from the explained side to the held-out one. Contents do not count: an image edited in place keeps
its side.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import PurePath

from coin_scale.probe.folder import ProbeSet

DEFAULT_HELD_OUT = 0.2
"""Share of a folder probe's images held out from the explainers by default (`--held-out`)."""
MIN_HELD_OUT = 10
"""Fewest held-out images worth scoring on: with fewer the split is skipped (the explainers see
every image) and a note says so."""

_SCALE = float(2**64)


def check_share(share: float) -> float:
    """`share` when it is in [0, 1); a ValueError naming `--held-out` otherwise."""
    if not 0.0 <= share < 1.0:
        raise ValueError(
            f"--held-out takes the share of probe images held out from the explainer, in [0, 1) "
            f"(0: no held-out scores); got {share}"
        )
    return share


def hash_position(relative: str) -> float:
    """Where `relative` (a path inside the probe folder, `/`-separated) falls in [0, 1)."""
    digest = hashlib.blake2b(relative.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def is_held_out(relative: str, share: float) -> bool:
    """Whether the image at `relative` is held out at `share` (0: none is)."""
    return hash_position(relative) < check_share(share)


def relative_path(probe: ProbeSet, path: str) -> str:
    """`path` relative to the probe folder, `/`-separated on every system."""
    return PurePath(os.path.relpath(path, probe.root)).as_posix()


def held_out_images(probe: ProbeSet, share: float) -> tuple[bool, ...]:
    """Per probe image (in probe order), whether it is held out at `share`."""
    check_share(share)
    return tuple(is_held_out(relative_path(probe, image.path), share) for image in probe.images)
