"""report.html: self-contained, escaped, robust to missing images, and really renders in Chromium."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from coin_scale.report import render_report, write_report
from coin_scale.sweep.records import ClassExplanation, Exemplar, UnitFinding

CHROMIUM = Path("/usr/bin/chromium")
EVIL = "<script>alert(1)</script>"


def _png(path: Path, colour: tuple[int, int, int], size: int = 128) -> str:
    """A saturated shape on a pale background: colours a screenshot can be checked for."""
    img = Image.new("RGB", (size, size), (250, 250, 235))
    draw = ImageDraw.Draw(img)
    draw.ellipse((size // 8, size // 8, size * 7 // 8, size * 7 // 8), fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return str(path)


def make_explanation(root: Path, *, random_weights: bool = False) -> ClassExplanation:
    """A realistic explanation over generated images, with one missing exemplar and one evil label."""
    target = _png(root / "target.png", (220, 30, 30), size=320)
    red = _png(root / "ex" / "red.png", (230, 20, 20))
    green = _png(root / "ex" / "green.png", (20, 200, 40))
    blue = _png(root / "ex" / "blue.png", (20, 40, 230))
    missing = str(root / "ex" / "gone.png")
    positive = (
        UnitFinding(
            layer="layer4",
            unit=117,
            rank=0,
            contribution=2.412,
            share=0.46,
            label="red round things",
            description="fires on red discs and apples",
            formula="(shape=circle AND color=red)",
            iou=0.412,
            explainer="offline",
            exemplars=(
                Exemplar(image_path=red, activation=9.81, label="red circle"),
                Exemplar(image_path=missing, activation=7.5, label="vanished"),
            ),
        ),
        UnitFinding(
            layer="layer4",
            unit=33,
            rank=1,
            contribution=1.205,
            share=0.23,
            label=EVIL,
            description="an LLM label <b>with</b> markup & ampersands",
            formula="color=green OR color=blue",
            iou=0.201,
            explainer="offline",
            exemplars=(
                Exemplar(image_path=green, activation=5.2, label="green"),
                Exemplar(image_path=blue, activation=4.9, label=EVIL),
            ),
        ),
        UnitFinding(
            layer="layer4",
            unit=8,
            rank=2,
            contribution=0.5,
            share=0.095,
            error="explainer timed out after 30 s",
        ),
    )
    negative = (
        UnitFinding(
            layer="layer4",
            unit=401,
            rank=0,
            contribution=-0.812,
            share=0.0,
            label="blue sky",
            formula="color=blue",
            iou=0.18,
        ),
    )
    return ClassExplanation(
        run_id="run-2024-test",
        image_path=target,
        model="resnet18",
        weights="file-0123456789ab",
        random_weights=random_weights,
        class_name="red ball",
        class_index=42,
        probability=0.873,
        logit=5.21,
        layer="layer4",
        method="exact_linear",
        bias=0.1,
        top_classes=(("red ball", 0.873), ("apple", 0.08), ("tomato", 0.02)),
        positive=positive,
        negative=negative,
        text="The model saw a red ball mostly because of unit 117 (red round things).",
        notes=("random weights: labels are meaningless",) if random_weights else (),
    )


class _Dom(HTMLParser):
    """Collects <img> srcs, <script> elements and the visible text of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.img_srcs: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.img_srcs.append(dict(attrs).get("src") or "")
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(doc: str) -> _Dom:
    dom = _Dom()
    dom.feed(doc)
    return dom


def test_report_is_self_contained_and_escaped(tmp_path):
    e = make_explanation(tmp_path / "img")
    path = write_report(e, tmp_path / "out")
    assert path == tmp_path / "out" / "report.html"
    doc = path.read_text(encoding="utf-8")
    dom = _parse(doc)
    # target + red + green + blue; the missing exemplar is a placeholder, not an <img>
    assert len(dom.img_srcs) == 4
    assert all(src.startswith("data:image/jpeg;base64,") for src in dom.img_srcs)
    assert dom.scripts == 0 and "<script>" not in doc
    text = "".join(dom.text)
    assert EVIL in text  # shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert "<b>with</b>" not in doc
    for needle in (
        "red round things",
        "+2.412",
        "46.0%",
        "IoU 0.412",
        "(shape=circle AND color=red)",
        "explainer timed out after 30 s",
        "blue sky",
        "-0.812",
        "87.3%",
        "exact: fc weight × pooled activation; contributions + bias = logit",
        "resnet18",
        "file-0123456789ab",
        "run-2024-test",
    ):
        assert needle in text, needle
    assert "missing image" in text and str(tmp_path / "img" / "ex" / "gone.png") in text
    assert "random weights" not in text
    # rank order of positive units
    assert text.index("unit 117") < text.index("unit 33") < text.index("unit 8")


def test_report_survives_being_moved(tmp_path):
    e = make_explanation(tmp_path / "img")
    path = write_report(e, tmp_path / "out")
    shutil.rmtree(tmp_path / "img")
    moved = tmp_path / "elsewhere.html"
    shutil.move(path, moved)
    assert len(_parse(moved.read_text(encoding="utf-8")).img_srcs) == 4


def test_random_weights_banner_and_missing_target(tmp_path):
    e = make_explanation(tmp_path / "img", random_weights=True)
    (tmp_path / "img" / "target.png").unlink()
    (tmp_path / "img" / "ex" / "red.png").write_bytes(b"not a png")
    doc = render_report(e)
    text = "".join(_parse(doc).text)
    assert "random weights: these labels mean nothing" in text
    assert "random weights: labels are meaningless" in text  # the notes
    assert text.count("missing image") == 3  # target, corrupt red, vanished


def test_gradient_method_and_no_negatives(tmp_path):
    from dataclasses import replace

    e = replace(
        make_explanation(tmp_path / "img"), method="grad_x_activation", bias=None, negative=()
    )
    text = "".join(_parse(render_report(e)).text)
    assert "gradient × activation" in text
    assert "pushed against" not in text and "bias" not in text


def test_write_report_rejects_other_records(tmp_path):
    with pytest.raises(TypeError, match="ClassExplanation"):
        write_report({"run_id": "x"}, tmp_path)  # type: ignore[arg-type]


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs /usr/bin/chromium: run `bash scripts/install_chromium.sh` "
    "(apt-get install -y --no-install-recommends chromium)",
)
def test_report_renders_in_chromium(tmp_path):
    e = make_explanation(tmp_path / "img")
    path = write_report(e, tmp_path / "out")
    shot = tmp_path / "shot.png"
    proc = _chromium(
        [f"--screenshot={shot}", "--window-size=1200,1600", path.as_uri()], tmp_path / "profile"
    )
    assert shot.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 10, "screenshot is blank"
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((r > 180) & (g < 80) & (b < 80)).sum() > 500, "no red from the embedded target image"
    assert ((g > 150) & (r < 80) & (b < 100)).sum() > 50, "no green from an embedded exemplar"
    assert ((b > 180) & (r < 80) & (g < 100)).sum() > 50, "no blue from an embedded exemplar"

    proc = _chromium(["--dump-dom", path.as_uri()], tmp_path / "profile2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _parse(proc.stdout)
    assert len(dom.img_srcs) == 4
    assert all(src.startswith("data:") for src in dom.img_srcs)
    assert dom.scripts == 0
    text = re.sub(r"\s+", " ", "".join(dom.text))
    for label in ("red round things", EVIL, "blue sky", "explainer timed out after 30 s"):
        assert label in text, label


def test_sae_features_are_named_and_the_error_term_is_shown(tmp_path):
    e = dataclasses.replace(
        make_explanation(tmp_path / "img"), unit_kind="sae", method="exact_sae_decoder",
        terms=(("sae_decoder_bias", 0.25), ("sae_error", -0.5)),
    )  # fmt: skip
    text = " ".join(" ".join(_parse(render_report(e)).text).split())
    assert "SAE features that pushed towards red ball" in text
    assert "#1 · SAE feature 117" in text and "· unit 117" not in text
    assert "decoder bias +0.250" in text and "reconstruction error -0.500" in text
    assert "SAE decoder direction" in text
