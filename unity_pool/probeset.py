"""Rendered probe sets on disk: images, their ground-truth attributes and the scene specs.

Layout of a probe set directory:

    probeset.json          what made it (parameters); written first, marks the directory as ours
    images/00000.png ...   one PNG per scene, each written under a temporary name and renamed
    scenes.jsonl           one line per image: {"image_path": ..., "scene": <spec>}
    attributes.parquet     image_path + one column per attribute; written last (temp + rename),
                           so it never lists an image that is not on disk
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unity_pool import vocab
from unity_pool.sampling import sample_scenes
from unity_pool.scene import Scene

log = logging.getLogger(__name__)

MARKER = "probeset.json"
ATTRIBUTES_FILE = "attributes.parquet"
SCENES_FILE = "scenes.jsonl"
IMAGES_DIR = "images"
MARKER_KIND = "coin-scale render probe set"
"""`kind` in probeset.json; a directory whose marker has another kind is not ours."""
_IMAGE_NAME = re.compile(r"^\d+\.png$")
_OURS = (MARKER, ATTRIBUTES_FILE, SCENES_FILE, IMAGES_DIR)


class ProbeSetError(ValueError):
    """The output directory cannot be used as asked; says why and what to do instead."""


@dataclass(frozen=True, kw_only=True)
class ProbeSetParams:
    """Everything that determines a probe set's contents (not how fast it is made)."""

    n: int
    """Number of images."""
    seed: int
    """Seed of the scene sampler; the same parameters give byte-identical files."""
    size: int = 224
    """Width and height of the images, pixels."""
    fixed: tuple[tuple[str, Any], ...] = ()
    """Attributes pinned to one value, e.g. (("n_objects", 1), ("size", "large")); () samples all."""

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ProbeSetError(
                f"n: expected at least 1 image; got {self.n}. Fix: ask for 1 or more."
            )
        if self.seed < 0:
            raise ProbeSetError(
                f"seed: expected an integer >= 0; got {self.seed}. Fix: use 0 or more."
            )
        low, high = vocab.RANGES["scene.width"]
        if not low <= self.size <= high:
            raise ProbeSetError(
                f"size: expected {int(low)}..{int(high)} pixels; got {self.size}. Fix: e.g. 224."
            )


@dataclass(frozen=True, kw_only=True)
class ProbeSetInfo:
    """What `write_probe_set` produced."""

    root: Path
    """The probe set directory."""
    n: int
    """Images written."""
    seconds: float
    """Wall time of sampling, rendering and writing."""


def image_name(index: int, n: int) -> str:
    """`images/00042.png`: zero-padded to at least 5 digits (more when n needs them)."""
    return f"{IMAGES_DIR}/{index:0{max(5, len(str(n - 1)))}d}.png"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_out_dir(root: Path, params: ProbeSetParams, *, overwrite: bool) -> None:
    """Refuse a directory that is a file, or non-empty and not a probe set made with the same
    parameters (unless `overwrite`)."""
    if root.exists() and not root.is_dir():
        raise ProbeSetError(f"{root} is a file; expected a directory. Fix: choose another --out.")
    if not root.exists() or overwrite or not any(root.iterdir()):
        return
    marker = root / MARKER
    try:
        found = json.loads(marker.read_text("utf-8"))
    except (OSError, ValueError):
        found = None
    if not isinstance(found, dict) or found.get("kind") != MARKER_KIND:
        names = sorted(p.name for p in root.iterdir())
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ProbeSetError(
            f"{root} is not empty ({shown}) and is not a probe set written by `coin-scale "
            "render`. Fix: choose a new or empty --out, or pass --overwrite to write into it "
            f"(only {', '.join(_OURS)} are replaced)."
        )
    if found.get("params") != params_record(params):
        raise ProbeSetError(
            f"{root} holds a probe set made with {found.get('params')}; this run asks for "
            f"{params_record(params)}. Fix: pass the same flags, another --out, or --overwrite."
        )


def _same_probe_set(root: Path, params: ProbeSetParams) -> bool:
    """Whether `root` holds a (possibly unfinished) probe set made with exactly `params`."""
    try:
        found = json.loads((root / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and found.get("params") == params_record(params)


def _clear_index(root: Path) -> None:
    """Remove the index files and stale temp images, keeping finished images."""
    for name in (ATTRIBUTES_FILE, SCENES_FILE):
        (root / name).unlink(missing_ok=True)
    images = root / IMAGES_DIR
    for path in images.glob(".*.tmp") if images.is_dir() else ():
        path.unlink()


def _clear_previous(root: Path) -> None:
    """Remove what an earlier run here wrote (attributes first, so no stale index survives)."""
    for name in (ATTRIBUTES_FILE, SCENES_FILE):
        (root / name).unlink(missing_ok=True)
    images = root / IMAGES_DIR
    if images.is_dir():
        for path in images.iterdir():
            if _IMAGE_NAME.match(path.name) or path.name.endswith(".tmp"):
                path.unlink()


def _render_job(job: tuple[Scene, str]) -> dict[str, Any]:
    """Render one scene to `path` (temp name + rename); return its attributes. Runs in workers.

    An image already at `path` is kept: images are written atomically and are deterministic for
    the probe set's parameters, so a resumed run (after a full disk, a kill) re-renders nothing."""
    from unity_pool.attributes import scene_attributes
    from unity_pool.procedural.backend import encode_png
    from unity_pool.procedural.draw import render

    scene, path = job
    if Path(path).is_file():
        return scene_attributes(scene)
    image, attributes = render(scene)
    _write_atomic(Path(path), encode_png(image))
    return attributes


def _render_all(jobs: list[tuple[Scene, str]], workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        yield from map(_render_job, jobs)
        return
    # spawn, not fork: the caller may hold threads (Ray, tqdm) that fork would copy half-way
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap(
            _render_job, jobs, chunksize=max(1, min(32, len(jobs) // (4 * workers)))
        )


RENDER_CHUNK = 64
"""Scenes sent to a `renderer` in one call (the progress bar moves a chunk at a time)."""


def _render_with(renderer: Any, jobs: list[tuple[Scene, str]]) -> Iterator[dict[str, Any]]:
    """`_render_job` through `renderer.render_many`: the images not on disk yet, a chunk a call,
    written atomically here; each job's attributes in order."""
    from unity_pool.attributes import scene_attributes

    for start in range(0, len(jobs), RENDER_CHUNK):
        chunk = jobs[start : start + RENDER_CHUNK]
        todo = [(scene, path) for scene, path in chunk if not Path(path).is_file()]
        results = renderer.render_many([scene for scene, _ in todo]) if todo else []
        for (_, path), result in zip(todo, results, strict=True):
            _write_atomic(Path(path), result.data)
        for scene, _ in chunk:
            yield scene_attributes(scene)


def _write_table(root: Path, params: ProbeSetParams, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [pa.field("image_path", pa.string())]
    for name, values in vocab.ATTRIBUTES.items():
        kind = pa.int64() if isinstance(values[0], int) else pa.string()
        fields.append(pa.field(name, kind))
    metadata = {
        "unity_pool.probe_set": json.dumps(params_record(params)),
        "unity_pool.spec_version": str(vocab.SPEC_VERSION),
    }
    schema = pa.schema(fields, metadata=metadata)
    table = pa.Table.from_pylist(rows, schema=schema)
    tmp = root / f".{ATTRIBUTES_FILE}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, root / ATTRIBUTES_FILE)


def params_record(params: ProbeSetParams) -> dict[str, Any]:
    """The parameters as stored in the marker (JSON types; `fixed` only when something is pinned,
    so probe sets written before it existed still match)."""
    record: dict[str, Any] = json.loads(json.dumps(asdict(params)))
    if not params.fixed:
        record.pop("fixed")
    return record


def write_probe_set(
    root: Path,
    params: ProbeSetParams,
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    renderer: Any = None,
) -> ProbeSetInfo:
    """Sample `params.n` balanced scenes, render them into `root` and write the index files.

    `workers` > 1 renders in that many spawned processes (same bytes as 1); like any spawn pool,
    call it from code under `if __name__ == "__main__":` (the console script is). `renderer`, an
    object with `render_many(scenes) -> [RenderResult]` in order (a render pool of the procedural
    backend), renders instead, `RENDER_CHUNK` scenes a call; the images are the same bytes.
    Raises `ProbeSetError` for an unusable `root` (see `check_out_dir`); `OSError` for I/O
    failures.
    """
    from tqdm import tqdm

    if workers < 1:
        raise ProbeSetError(f"workers: expected at least 1; got {workers}. Fix: use 1 or more.")
    start = time.perf_counter()
    resume = _same_probe_set(root, params)
    check_out_dir(root, params, overwrite=overwrite)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    if resume:
        _clear_index(root)  # keep the images already written: they are the same bytes
    else:
        _clear_previous(root)
    marker = {"kind": MARKER_KIND, "version": 1, "params": params_record(params)}
    _write_atomic(root / MARKER, (json.dumps(marker, indent=2) + "\n").encode("utf-8"))

    scenes = sample_scenes(
        params.n, params.seed, width=params.size, height=params.size, fixed=dict(params.fixed)
    )
    names = [image_name(i, params.n) for i in range(params.n)]
    jobs = [(scene, str(root / name)) for scene, name in zip(scenes, names, strict=True)]
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=params.n, desc="render", unit="img", disable=not progress, leave=False)
    try:
        rendered = (
            _render_with(renderer, jobs) if renderer is not None
            else _render_all(jobs, min(workers, params.n))
        )  # fmt: skip
        for name, attributes in zip(names, rendered, strict=True):
            rows.append({"image_path": name, **attributes})
            bar.update(1)
    except BaseException:
        for stale in (root / IMAGES_DIR).glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        raise
    finally:
        bar.close()

    lines = (
        json.dumps({"image_path": name, "scene": scene.to_dict()}, sort_keys=True)
        for name, scene in zip(names, scenes, strict=True)
    )
    _write_atomic(root / SCENES_FILE, ("\n".join(lines) + "\n").encode("utf-8"))
    _write_table(root, params, rows)
    seconds = time.perf_counter() - start
    log.debug("wrote %d images to %s in %.1fs", params.n, root, seconds)
    return ProbeSetInfo(root=root, n=params.n, seconds=seconds)
