"""The fp16 activation cache: shuffled shards written atomically, streamed in bounded memory."""

from __future__ import annotations

import json
import weakref

import numpy as np
import pytest
import torch

from coin_scale.sae import ActivationCacheReader, ActivationCacheWriter
from coin_scale.sae import cache as cache_module

IMAGES, D_IN, HEIGHT, WIDTH = 20, 6, 4, 4
TOKENS = IMAGES * HEIGHT * WIDTH


def image_batch(first: int, count: int) -> torch.Tensor:
    """Conv maps whose channel 0 is the image index and channel 1 the spatial position."""
    acts = torch.randn(count, D_IN, HEIGHT, WIDTH)
    acts[:, 0] = torch.arange(first, first + count, dtype=torch.float32).view(-1, 1, 1)
    acts[:, 1] = torch.arange(HEIGHT * WIDTH, dtype=torch.float32).view(HEIGHT, WIDTH)
    return acts


def write_cache(root, **kwargs) -> None:
    with ActivationCacheWriter(
        root, D_IN, shard_tokens=64, shuffle_shards=2, model="m", layer="l", **kwargs
    ) as writer:
        for first in range(0, IMAGES, 2):
            writer.add(image_batch(first, 2))


def ids(tokens: np.ndarray | torch.Tensor) -> list[tuple[int, int]]:
    """(image, position) of every token."""
    array = np.asarray(tokens)
    return [(int(a), int(b)) for a, b in array[:, :2]]


@pytest.fixture
def cache_dir(tmp_path):
    root = tmp_path / "cache"
    write_cache(root)
    return root


def test_writer_stores_fp16_shards_and_a_manifest(cache_dir):
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["format"] == "coin-scale-activation-cache"
    assert manifest["tokens"] == TOKENS and manifest["d_in"] == D_IN
    assert manifest["dtype"] == "float16" and manifest["model"] == "m"
    assert [n for _, n in manifest["shards"]] == [64] * 5
    names = sorted(p.name for p in cache_dir.iterdir())
    assert names == ["manifest.json"] + [f"shard-{i:05d}.npy" for i in range(5)]
    shard = np.load(cache_dir / "shard-00000.npy")
    assert shard.dtype == np.float16 and shard.shape == (64, D_IN)


def test_shards_mix_images(cache_dir):
    first = np.load(cache_dir / "shard-00000.npy")
    images = [image for image, _ in ids(first)]
    assert len(set(images)) > 3
    assert images != sorted(images)
    shards_of_image0 = {
        i for i in range(5) if 0 in np.load(cache_dir / f"shard-{i:05d}.npy")[:, 0].astype(int)
    }
    assert len(shards_of_image0) > 1


def test_stream_returns_every_token_once_per_epoch(cache_dir):
    reader = ActivationCacheReader(cache_dir)
    batches = list(reader.stream(50, seed=1, epochs=2))
    assert all(b.dtype == torch.float32 and b.shape[1] == D_IN for b in batches)
    assert [len(b) for b in batches[:-1]] == [50] * (len(batches) - 1)
    tokens = torch.cat(batches)
    assert len(tokens) == 2 * TOKENS
    expected = sorted((i, p) for i in range(IMAGES) for p in range(HEIGHT * WIDTH))
    epoch1, epoch2 = ids(tokens[:TOKENS]), ids(tokens[TOKENS:])
    assert sorted(epoch1) == expected and sorted(epoch2) == expected
    assert epoch1 != epoch2
    again = ids(torch.cat(list(reader.stream(50, seed=1, epochs=1))))
    assert again == epoch1
    assert ids(torch.cat(list(reader.stream(50, seed=2, epochs=1)))) != epoch1


def test_stream_values_equal_the_fp16_tokens(tmp_path):
    acts = torch.randn(7, D_IN) * 10
    with ActivationCacheWriter(tmp_path, D_IN, shard_tokens=4) as writer:
        writer.add(acts)
    out = torch.cat(list(ActivationCacheReader(tmp_path).stream(3)))
    expected = acts.half().float()
    order = [int(torch.nonzero((expected == row).all(dim=1))[0]) for row in out]
    assert sorted(order) == list(range(7))
    torch.testing.assert_close(out, expected[order], rtol=0, atol=0)


def test_stream_holds_one_shard_at_a_time(cache_dir, monkeypatch):
    live, peak = [0], [0]
    original = cache_module._load_shard

    def counting_load(*args):
        array = owner = original(*args)
        while isinstance(owner.base, np.ndarray):  # views keep their owner's memory alive
            owner = owner.base
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        weakref.finalize(owner, lambda: live.__setitem__(0, live[0] - 1))
        return array

    monkeypatch.setattr(cache_module, "_load_shard", counting_load)
    reader = ActivationCacheReader(cache_dir)
    kept = [b for b in reader.stream(30, epochs=3)]  # the consumer keeps every batch
    assert sum(len(b) for b in kept) == 3 * TOKENS
    assert peak[0] == 1  # one shard at a time, plus less than a batch of the previous one


def test_statistics_in_float64(cache_dir):
    stats = ActivationCacheReader(cache_dir).statistics(chunk_tokens=37)
    tokens = np.concatenate(
        [np.load(cache_dir / f"shard-{i:05d}.npy").astype(np.float64) for i in range(5)]
    )
    assert stats.tokens == TOKENS
    np.testing.assert_allclose(stats.mean.numpy(), tokens.mean(axis=0), rtol=1e-12)
    assert stats.mean_squared_norm == pytest.approx((tokens**2).sum(axis=1).mean(), rel=1e-12)
    assert stats.input_scale == pytest.approx(np.sqrt(D_IN / stats.mean_squared_norm))


def test_an_empty_or_missing_cache_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no tokens; run the probe pass first"):
        ActivationCacheReader(tmp_path / "nowhere")
    ActivationCacheWriter(tmp_path / "empty", D_IN).close()
    with pytest.raises(ValueError, match="holds no tokens; run the probe pass first"):
        ActivationCacheReader(tmp_path / "empty")


def test_an_unfinished_cache_is_never_read(tmp_path):
    writer = ActivationCacheWriter(tmp_path, D_IN, shard_tokens=8, shuffle_shards=1)
    writer.add(torch.randn(20, D_IN))  # two shards written, no manifest yet
    assert len(list(tmp_path.glob("shard-*.npy"))) == 2
    with pytest.raises(ValueError, match="no manifest.json"):
        ActivationCacheReader(tmp_path)


def test_writer_refuses_an_existing_cache_unless_told(cache_dir):
    with pytest.raises(ValueError, match="already holds an activation cache"):
        ActivationCacheWriter(cache_dir, D_IN)
    with ActivationCacheWriter(cache_dir, D_IN, shard_tokens=16, overwrite=True) as writer:
        writer.add(torch.randn(10, D_IN))
    reader = ActivationCacheReader(cache_dir)
    assert reader.tokens == 10
    assert sorted(p.name for p in cache_dir.iterdir()) == ["manifest.json", "shard-00000.npy"]


def test_writer_rejects_bad_activations(tmp_path):
    writer = ActivationCacheWriter(tmp_path, D_IN)
    with pytest.raises(ValueError, match=r"expected \(batch, 6, height, width\)"):
        writer.add(torch.randn(2, D_IN + 1, 3, 3))
    with pytest.raises(ValueError, match="not finite in float16"):
        writer.add(torch.full((2, D_IN), 1e6))


def test_a_failed_shard_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(*_args, **_kwargs):
        raise OSError("disk full")

    writer = ActivationCacheWriter(tmp_path, D_IN, shard_tokens=4, shuffle_shards=1)
    monkeypatch.setattr(cache_module.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        writer.add(torch.randn(4, D_IN))
    assert list(tmp_path.iterdir()) == []
