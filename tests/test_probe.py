"""Scanning a probe folder: recursive listing, labels, content hash, unreadable files."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from coin_scale.errors import UserError
from coin_scale.models import Preprocess
from coin_scale.models.activations import decode_batch
from coin_scale.probe import scan_probe


def _image(path, mode="RGB", size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=128 if mode == "L" else None).save(path)
    return path


def test_labels_from_folders_and_wnid_names(tmp_path):
    _image(tmp_path / "cats" / "a.png")
    _image(tmp_path / "deep" / "dogs" / "b.jpg")
    _image(tmp_path / "n02123045_tabby.JPEG")
    _image(tmp_path / "loose.webp")
    (tmp_path / "notes.txt").write_text("not an image")
    probe = scan_probe(tmp_path)
    labels = {p.path.rsplit("/", 1)[-1]: p.label for p in probe.images}
    assert labels == {"a.png": "cats", "b.jpg": "dogs", "n02123045_tabby.JPEG": "tabby", "loose.webp": None}
    assert [p.index for p in probe.images] == list(range(4))


def test_probe_id_changes_with_content_only(tmp_path):
    _image(tmp_path / "x" / "a.png")
    first = scan_probe(tmp_path).probe_id
    assert scan_probe(tmp_path).probe_id == first
    _image(tmp_path / "x" / "a.png", size=(41, 30))
    assert scan_probe(tmp_path).probe_id != first


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        scan_probe(tmp_path / "nope")
    with pytest.raises(UserError, match="holds no images"):
        scan_probe(tmp_path)


def test_greyscale_rgba_and_corrupt_files_decode_or_are_reported(tmp_path):
    grey = _image(tmp_path / "g.png", mode="L")
    rgba = _image(tmp_path / "r.png", mode="RGBA")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    batch = decode_batch([(0, str(grey)), (1, str(broken)), (2, str(rgba))], Preprocess(resize=32, crop=32))
    assert batch.indices == [0, 2]
    assert batch.pixels.shape == (2, 3, 32, 32) and batch.pixels.dtype == torch.uint8
    assert batch.failures[0][0] == 1 and "Error" in batch.failures[0][1]


def test_a_rendered_probe_set_is_a_probe(tmp_path):
    from unity_pool.probeset import ProbeSetParams, write_probe_set

    write_probe_set(tmp_path / "r", ProbeSetParams(n=6, seed=0, size=64), progress=False)
    probe = scan_probe(tmp_path / "r")
    assert len(probe) == 6
    assert probe.attributes_path and probe.attributes_path.endswith("attributes.parquet")
    assert {im.label for im in probe.images} == {None}
