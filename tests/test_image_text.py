"""The image-text model that scores photographs against concept words: a tiny open_clip
architecture built here (random weights), its embedding caches, and its errors."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from coin_scale.concepts.vocabulary import load_vocabulary
from coin_scale.models import image_text
from coin_scale.models.image_text import (
    ImageTextModel,
    ImageTextSource,
    concept_similarity,
    image_embeddings,
    text_embeddings,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _images(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.new("RGB", (40, 30), (40 * i % 255, 100, 200 - 20 * i)).save(path)
        paths.append(str(path))
    (folder / "broken.jpg").write_bytes(b"not an image")
    return [*paths, str(folder / "broken.jpg")]


def test_random_weights_encode_texts_and_images_normalised(tiny_clip, tmp_path, caplog):
    model = ImageTextModel(ImageTextSource(model=tiny_clip, weights="none"))
    assert "RANDOM weights" in caplog.text and re.fullmatch(r"coin-tiny-clip-[0-9a-f]{8}-none-seed0", model.key)
    texts = model.encode_texts(["tabby cat", "grass", "brick wall"])
    assert texts.shape == (3, 32) and torch.allclose(texts.norm(dim=1), torch.ones(3))
    images = model.encode_images(_images(tmp_path / "probe"))
    assert images.shape == (7, 32)
    assert torch.isnan(images[-1]).all() and torch.isfinite(images[:-1]).all()
    sims = concept_similarity(images, texts)
    assert sims.shape == (7, 3) and bool((sims[:-1].abs() <= 1.0001).all())
    again = ImageTextModel(ImageTextSource(model=tiny_clip, weights="none"))
    torch.testing.assert_close(again.encode_texts(["grass"]), texts[1:2])  # seeded


def test_embeddings_are_cached_per_model_weights_and_content(tiny_clip, tmp_path, cache, monkeypatch):
    model = ImageTextModel(ImageTextSource(model=tiny_clip, weights="none"))
    paths = _images(tmp_path / "probe")
    first = text_embeddings(model, ["a", "b"], "f" * 64)
    images = image_embeddings(model, paths, "probe123")
    assert {p.relative_to(cache).as_posix() for p in cache.rglob("*.npy")} == {
        f"image_text/images/{model.key}-probe123.npy",
        f"image_text/text/{model.key}-{'f' * 32}.npy",
    }

    def refuse(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(model, "encode_texts", refuse)
    monkeypatch.setattr(model, "encode_images", refuse)
    torch.testing.assert_close(text_embeddings(model, ["a", "b"], "f" * 64), first)
    np.testing.assert_array_equal(image_embeddings(model, paths, "probe123").numpy(), images.numpy())


def test_a_local_checkpoint_loads_and_one_of_another_architecture_is_one_line(tiny_clip, tmp_path):
    model = ImageTextModel(ImageTextSource(model=tiny_clip, weights="none"))
    path = tmp_path / "tiny.pt"
    torch.save(model.model.state_dict(), path)
    loaded = ImageTextModel(ImageTextSource(model=tiny_clip, weights=str(path)))
    assert loaded.weights_id.startswith("file-")
    torch.testing.assert_close(loaded.encode_texts(["grass"]), model.encode_texts(["grass"]))
    other = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, other)
    with pytest.raises(ValueError, match="not weights of open_clip coin-tiny-clip"):
        ImageTextModel(ImageTextSource(model=tiny_clip, weights=str(other)))
    with pytest.raises(ValueError, match="no such file"):
        ImageTextModel(ImageTextSource(model=tiny_clip, weights=str(tmp_path / "missing.pt")))


def test_unknown_architecture_and_unreachable_weights_are_one_line(tiny_clip, monkeypatch):
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-B-33'; close matches: .*ViT-B-32"):
        ImageTextModel(ImageTextSource(model="ViT-B-33"))
    # Offline and not cached: said in one line, at once (not after the hub's retries).
    monkeypatch.setattr(image_text, "_cached", lambda repo, filename: False)
    monkeypatch.setattr(image_text, "_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(ValueError) as err:
        ImageTextModel(ImageTextSource(model="ViT-B-32"))
    message = str(err.value)
    assert "open_clip ViT-B-32 (openai)" in message and "--clip-weights PATH" in message
    assert "open_clip_pytorch_model.bin" in message and "\n" not in message


def test_a_replica_batch_is_the_in_process_encoding_with_its_failures(tiny_clip, tmp_path):
    """What an image-text replica computes for one batch: the readable images' embeddings under
    their probe indices, the unreadable ones named, and the weights' fingerprint, which a second
    build of the same source shares (so texts encoded here compare with images encoded there)."""
    model = ImageTextModel(ImageTextSource(model=tiny_clip, weights="none"))
    paths = _images(tmp_path / "probe", n=3)  # 3 images and a broken file
    result = model.embed_batch(7, [(10 + i, path) for i, path in enumerate(paths)])
    assert result.batch_id == 7 and result.indices.tolist() == [10, 11, 12]
    assert [index for index, _ in result.failures] == [13] and "UnidentifiedImageError" in result.failures[0][1]
    np.testing.assert_allclose(result.embeddings, model.encode_images(paths)[:3].numpy(), atol=1e-5)
    again = ImageTextModel(ImageTextSource(model=tiny_clip, weights="none"))
    assert result.weights == again.fingerprint()
    other = ImageTextModel(ImageTextSource(model=tiny_clip, weights="none", seed=1))
    assert other.fingerprint() != result.weights


class _OtherWeights:
    """Image-text replicas that report weights other than the driver's (a test double)."""

    def __init__(self, model):
        self.model = model

    @contextlib.contextmanager
    def __call__(self, source):
        yield self

    def embed(self, batches):
        for i, batch in enumerate(batches):
            result = self.model.embed_batch(i, batch)
            yield dataclasses.replace(result, weights="0" * 16)


def test_replicas_with_other_weights_are_refused(tiny_clip, tmp_path, cache):
    model = ImageTextModel(ImageTextSource(model=tiny_clip, weights="none"))
    paths = _images(tmp_path / "probe", n=2)
    with pytest.raises(ValueError, match="image-text replica built coin-tiny-clip with other weights"):
        image_embeddings(model, paths, "p1", open_encoders=_OtherWeights(model))
    assert not list(cache.rglob("*.npy"))  # nothing cached from them


@pytest.mark.slow
def test_a_probe_is_embedded_on_image_text_replicas(tiny_clip, ray_cluster, tmp_path, cache):
    """The probe's images go to image-text replicas on Ray (processes of their own, which build
    the tiny architecture from its config file): the same embeddings as in this process, the
    unreadable image a NaN row, cached for the next run."""
    import os

    from coin_scale.runtime.pools import image_text_pool

    seen: list[list[int]] = []

    @contextlib.contextmanager
    def recording(source):
        with image_text_pool(source, address=None, replicas=None) as pool:
            seen.append(pool.pids())
            yield pool

    model = ImageTextModel(ImageTextSource(model=tiny_clip, weights="none"))
    paths = _images(tmp_path / "probe", n=40)  # two batches of 32 and the broken file
    images = image_embeddings(model, paths, "p40", open_encoders=recording)
    assert seen and os.getpid() not in seen[0]
    assert images.shape == (41, 32) and torch.isnan(images[-1]).all()
    np.testing.assert_allclose(images[:-1].numpy(), model.encode_images(paths)[:-1].numpy(), atol=1e-5)
    again = image_embeddings(model, paths, "p40", open_encoders=recording)  # read from the cache
    assert len(seen) == 1
    np.testing.assert_array_equal(again.numpy(), images.numpy())


@pytest.mark.slow
def test_dissect_explains_a_photo_folder_with_clip(tiny_clip, ray_cluster, probe_dir, tmp_path, cache, capsys):
    """`coin-scale dissect --explainer clip` on a folder of images, no labels used: every unit
    gets a word of the vocabulary, its soft-WPMI and runners-up, in the explanations table."""
    from coin_scale.cli import main
    from coin_scale.storage import connect

    words = tmp_path / "words.txt"
    words.write_text("tabby cat\ngrass\nbrick wall\nsky\nwater\ngrass\n")  # a repeat is kept once
    warehouse = str(tmp_path / "wh")
    argv = ["dissect", "--model", "resnet18", "--weights", "none", "--layer", "layer4",
            "--probe", str(probe_dir), "--warehouse", warehouse, "--batch-size", "8",
            "--no-progress", "--run-id", "photo", "--explainer", "clip", "--clip-model", tiny_clip,
            "--clip-weights", "none", "--concepts", str(words), "--select", "layer4=0-9"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "explained the 10 units chosen with clip" in out and "10 ok" in out
    assert "random image-text weights" in out and "soft-WPMI" in out
    rows = connect(warehouse).sql(
        "SELECT unit, status, explainer, label, score_name, description FROM explanations "
        "WHERE run_id = 'photo' ORDER BY unit"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(10))
    assert {(r[1], r[2], r[4]) for r in rows} == {("ok", "clip", "soft_wpmi")}
    assert {r[3] for r in rows} <= {"tabby cat", "grass", "brick wall", "sky", "water"}
    assert all("then " in r[5] for r in rows)  # the runners-up
    assert list((cache / "image_text" / "text").glob("*.npy"))  # embedded once, reused next time


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--concepts", "/nowhere/words.txt"], "is neither a file nor one of objects"),
        (["--clip-model", "ViT-B-33"], "unknown open_clip model 'ViT-B-33'"),
        (["--clip-model", "/nowhere/tiny.json"], "open_clip model config /nowhere/tiny.json: no such file"),
    ],
)
def test_a_bad_clip_setting_is_one_line_before_any_work(tiny_clip, probe_dir, tmp_path, capsys, flags, message):
    from coin_scale.cli import main

    warehouse = tmp_path / "wh"
    argv = ["dissect", "--model", "resnet18", "--weights", "none", "--layer", "layer4",
            "--probe", str(probe_dir), "--warehouse", str(warehouse), "--explainer", "clip",
            "--clip-weights", "none", "--clip-model", tiny_clip, *flags]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not warehouse.exists() or not any(warehouse.iterdir())


@pytest.mark.slow
def test_run_sweep_explains_a_photo_with_clip(tiny_clip, ray_cluster, probe_dir, tmp_path, cache, capsys):
    """The headline sweep on a photograph and a folder of photographs, no labels and no key:
    the driving units get words of the vocabulary, stored and in the report."""
    import run_sweep
    from coin_scale.storage import connect

    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(image)
    warehouse = tmp_path / "wh"
    argv = ["--image", str(image), "--model", "resnet18", "--weights", "none", "--top-k", "3",
            "--negatives", "1", "--probe", str(probe_dir), "--warehouse", str(warehouse),
            "--run-id", "clip1", "--no-progress", "--explainer", "clip", "--clip-model", tiny_clip,
            "--clip-weights", "none", "--concepts", "textures,colors"]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "Predicted " in out and (warehouse / "reports" / "clip1" / "report.html").is_file()
    rows = connect(warehouse).sql(
        "SELECT status, explainer, label, score_name FROM explanations WHERE run_id = 'clip1'"
    ).fetchall()
    vocabulary = {*load_vocabulary("textures").concepts, *load_vocabulary("colors").concepts}
    assert len(rows) == 4 and all(r[:2] == ("ok", "clip") and r[2] in vocabulary for r in rows)
    assert {r[3] for r in rows} == {"soft_wpmi"}
    # The class explanation by concept: the four units' words, printed, stored and reported.
    con = connect(warehouse)
    parts = con.sql(
        "SELECT part, concept, contribution, units, score_name FROM class_concepts "
        "WHERE run_id = 'clip1' ORDER BY rank"
    ).fetchall()
    logit = con.sql("SELECT logit FROM class_explanations WHERE run_id = 'clip1'").fetchall()[0][0]
    assert {p[0] for p in parts} == {"concept", "rest"} and parts[-1][0] == "rest"
    assert {p[1] for p in parts if p[0] == "concept"} == {r[2] for r in rows}
    assert sum(len(p[3]) for p in parts if p[0] == "concept") == 4
    assert sum(p[2] for p in parts) == pytest.approx(logit, rel=1e-5, abs=1e-5)
    assert {p[4] for p in parts if p[0] == "concept"} == {"soft_wpmi"}
    first = parts[0]
    assert f"because of {first[1]} (" in out and "the rest of layer4 and the bias" in out
    html = (warehouse / "reports" / "clip1" / "report.html").read_text()
    assert "<h2>By concept</h2>" in html and f"because of {first[1]}" in html


def test_bench_photo_times_every_phase_against_both_bare_forward_passes(
    ray_cluster, tiny_clip, probe_dir, tmp_path, cache, capsys
) -> None:
    """`coin-scale bench photo`: a whole layer over a photo folder, labelled by clip, with its
    phases, rates and the ratio to both models' bare forward passes (tiny inputs here)."""
    from coin_scale.cli import main

    words = tmp_path / "words.txt"
    words.write_text("red\ngreen\nblue\nsky\n")
    argv = ["bench", "photo", "--model", "resnet18", "--probe", str(probe_dir), "--clip-model",
            tiny_clip, "--concepts", str(words), "--bare-images", "8", "--batch-size", "8"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["images"], result["units"], result["concepts"]) == (36, 512, 4)
    assert 0 < result["explained_ok"] <= 512 and result["pipeline_s"] > 0
    assert len(result["phases_s"]) == 5 and all(v >= 0 for v in result["phases_s"].values())
    both = result["bare_forward_s"]["both"]
    assert both == pytest.approx(result["bare_forward_s"]["model"] + result["bare_forward_s"]["image_text"])
    assert result["pipeline_over_bare_forward"] == pytest.approx(result["pipeline_s"] / both)
    assert result["pipeline_over_bare_forward_each"] == [pytest.approx(result["pipeline_over_bare_forward"])]
    assert main([*argv[:2], "--explainer", "offline"]) == 2
    assert "must be clip or clip-formula" in capsys.readouterr().err
