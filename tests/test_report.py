"""report.html: self-contained, escaped, robust to missing images, and really renders in Chromium."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from coin_scale.chain.faithfulness import AblationScore
from coin_scale.chain.graph import Edge
from coin_scale.report import render_report, write_report
from coin_scale.report.chain_svg import MAX_PER_COLUMN
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
        head_bias=0.1,
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
        make_explanation(tmp_path / "img"), method="grad_x_activation", head_bias=None, negative=()
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


# ---------------------------------------------------------------- chain graph and faithfulness

def _chain_node(layer: str, unit: int, rank: int, contribution: float, **kw) -> UnitFinding:
    return UnitFinding(
        layer=layer, unit=unit, rank=rank, contribution=contribution, share=float("nan"), **kw
    )


def _scores(layer: str, chain: float, random: float, activation: float) -> list[AblationScore]:
    """A deletion curve at k = 1, 2, 4 whose drops at k are value * k / 4 (mean: * 0.75)."""
    out = []
    for k in (1, 2, 4):
        for ablation, scale in (("zero", 1.0), ("mean", 0.75)):
            for selection, value in (
                ("chain", chain),
                ("random", random),
                ("activation", activation),
            ):
                drop = value * scale * k / 4
                out.append(
                    AblationScore(
                        layer=layer, ablation=ablation, selection=selection, k=k,  # type: ignore[arg-type]
                        logit_drop=drop * 1.5, probability_drop=drop / 10, margin_drop=drop,
                        draws=20 if selection == "random" else 1,
                        margin_drop_std=0.125 * k if selection == "random" else 0.0,
                    )
                )  # fmt: skip
    return out


def make_chain_explanation(root: Path) -> ClassExplanation:
    """make_explanation's layer4 units, driven by two layer3 units, driven by three layer2 units."""
    e = make_explanation(root)
    ex = root / "ex"
    thumbs = {
        name: _png(ex / f"{name}.png", colour)
        for name, colour in (
            ("cyan", (20, 200, 200)), ("magenta", (210, 30, 200)), ("yellow", (230, 210, 20)),
            ("orange", (240, 140, 20)), ("purple", (110, 40, 180)),
        )
    }  # fmt: skip

    def shown(name: str) -> tuple[Exemplar, ...]:
        return (Exemplar(image_path=thumbs[name], activation=3.0, label=name),)

    nodes = (
        _chain_node("layer3", 5, 0, 0.9, label="round edges", formula="shape=circle", iou=0.3,
                    exemplars=shown("cyan")),
        _chain_node("layer3", 12, 1, 0.6, label=EVIL, exemplars=shown("magenta")),
        _chain_node("layer2", 7, 0, 0.5, label="red colour blobs that are very long indeed",
                    exemplars=shown("yellow")),
        _chain_node("layer2", 9, 1, 0.4, label="curved strokes", exemplars=shown("orange")),
        _chain_node("layer2", 21, 2, 0.2, label="green texture", exemplars=shown("purple")),
    )  # fmt: skip
    edges = tuple(
        Edge(src_layer, src, dst_layer, dst, w, "grad_x_activation")
        for src_layer, src, dst_layer, dst, w in (
            ("layer3", 5, "layer4", 117, 0.7), ("layer3", 12, "layer4", 117, 0.2),
            ("layer3", 12, "layer4", 33, 0.4), ("layer3", 5, "layer4", 8, 0.2),
            ("layer2", 7, "layer3", 5, 0.3), ("layer2", 9, "layer3", 5, 0.2),
            ("layer2", 9, "layer3", 12, 0.2), ("layer2", 21, "layer3", 12, 0.2),
        )
    )  # fmt: skip
    faithfulness = tuple(_scores("layer4", 2.0, 0.5, 1.0) + _scores("layer3", 1.0, 0.25, 1.5))
    return dataclasses.replace(
        e, layers=("layer2", "layer3", "layer4"), chain_nodes=nodes, chain_edges=edges,
        faithfulness=faithfulness,
    )  # fmt: skip


def _svgs(doc: str) -> dict[str, ET.Element]:
    """Every inline <svg> of the document, parsed as XML, by its class."""
    found = re.findall(r'<svg class="([a-z-]+)".*?</svg>', doc, flags=re.S)
    blocks = re.findall(r'<svg class="[a-z-]+".*?</svg>', doc, flags=re.S)
    out: dict[str, ET.Element] = {}
    for name, block in zip(found, blocks, strict=True):
        out.setdefault(name, _parse_svg(block))
    return out


def _parse_svg(block: str) -> ET.Element:
    """One <svg> parsed as XML (raises on anything not well-formed), its tags without the
    namespace it must declare."""
    root = ET.fromstring(block)
    assert root.tag.startswith("{"), "an inline <svg> declares the SVG namespace"
    for el in root.iter():
        el.tag = el.tag.rpartition("}")[2]
    return root


def _by_class(root: ET.Element, tag: str, css: str) -> list[ET.Element]:
    return [el for el in root.iter(tag) if css in (el.get("class") or "").split()]


def test_chain_graph_is_drawn_as_well_formed_svg(tmp_path):
    e = make_chain_explanation(tmp_path / "img")
    doc = render_report(e)
    assert "<script>" not in doc and _parse(doc).scripts == 0
    graph = _svgs(doc)["chain-graph"]
    nodes = _by_class(graph, "g", "node")
    units = len(e.chain_nodes) + len(e.positive) + len(e.negative)
    assert len(nodes) == units + 1  # + the class
    assert len(_by_class(graph, "g", "class-node")) == 1
    edges = _by_class(graph, "path", "edge")
    assert len(edges) == len(e.chain_edges) + len(e.positive) + len(e.negative)
    negative = _by_class(graph, "path", "negative")
    assert len(negative) == 1 and negative[0].get("stroke") == "#b42318"
    # width follows |weight| within a pair of layers: 0.7 is the strongest layer3 -> layer4 edge
    widths = {
        el.find("title").text.split(":")[0]: float(el.get("stroke-width"))  # type: ignore[union-attr]
        for el in _by_class(graph, "path", "unit-edge")
    }
    assert widths["layer3 #5 → layer4 #117"] == 8.0
    assert widths["layer3 #12 → layer4 #117"] == pytest.approx(1 + 7 * 0.2 / 0.7, abs=0.01)
    assert widths["layer2 #7 → layer3 #5"] == 8.0
    # thumbnails: every node with an exemplar on disk, and the target in the class node
    hrefs = [el.get("href") or "" for el in graph.iter("image")]
    assert len(hrefs) == 8  # 117, 33, five chain nodes, the target (8 and 401 have no exemplar)
    assert all(h.startswith("data:image/jpeg;base64,") for h in hrefs)
    texts = ["".join(el.itertext()) for el in graph.iter()]
    assert any(EVIL in t for t in texts)  # escaped once: the parsed text is the raw label
    assert "layer3 #12" in texts and "layer2 #21" in texts and "red ball" in texts
    assert any(t.startswith("red colour blobs that") and t.endswith("…") for t in texts)
    headers = [t for t in texts if t in ("layer2", "layer3", "layer4", "class")]
    assert headers[:4] == ["layer2", "layer3", "layer4", "class"]  # input side left


def test_chain_cards_and_faithfulness_section(tmp_path):
    e = make_chain_explanation(tmp_path / "img")
    doc = render_report(e)
    text = " ".join(" ".join(_parse(doc).text).split())
    assert text.index("Chain") < text.index("Units that pushed towards")
    assert text.index("layer3: units that drive the ones above (2)") < text.index(
        "layer2: units that drive the ones above (3)"
    )
    assert "drives layer4 #117 (+0.700), layer4 #8 (+0.200)" in text
    assert "sum of its edge weights to the layer above" in text
    assert "nan" not in text.lower()
    assert "Faithfulness" in text and "to its mean over the probe set" in text
    # layer4 at k = 4: chain 2.0 vs random 0.5 (zero), 1.5 vs 0.375 (mean)
    assert "k = 4" in text
    assert "margin drop, chain / random 4.00× 4.00×" in text
    assert "+0.500 ± 0.500" in text  # random: mean ± std over its draws
    assert "random k units, 20 draws" in text and "k most active units" in text
    assert "+3.000" in text and "+20.0 pp" in text  # layer4 chain logit and probability drops
    curves = [
        _parse_svg(b) for b in re.findall(r'<svg class="deletion-curve".*?</svg>', doc, re.S)
    ]
    assert len(curves) == 2
    lines = _by_class(curves[0], "polyline", "curve")
    assert [el.get("class") for el in lines] == ["curve chain", "curve random", "curve activation"]
    assert all(len((el.get("points") or "").split()) == 3 for el in lines)
    labels = ["".join(el.itertext()) for el in _by_class(curves[0], "text", "axis-label")]
    assert labels == ["k = units ablated (log scale)", "margin drop"]


def test_no_chain_or_faithfulness_sections_when_empty(tmp_path):
    single = make_explanation(tmp_path / "img")
    doc = render_report(single)
    assert "Faithfulness" not in doc and "drive the ones above" not in doc
    assert "deletion-curve" not in doc
    assert len(_by_class(_svgs(doc)["chain-graph"], "g", "node")) == 5  # 4 units + the class
    empty = dataclasses.replace(single, positive=(), negative=())
    doc = render_report(empty)
    assert "<svg" not in doc and "<h2>Chain</h2>" not in doc and "Faithfulness" not in doc


def test_chain_columns_are_capped(tmp_path):
    e = make_chain_explanation(tmp_path / "img")
    many = tuple(_chain_node("layer3", 100 + i, i, 0.1) for i in range(MAX_PER_COLUMN + 3))
    graph = _svgs(render_report(dataclasses.replace(e, chain_nodes=many)))["chain-graph"]
    drawn = [el for el in _by_class(graph, "g", "node") if el.get("data-layer") == "layer3"]
    assert len(drawn) == MAX_PER_COLUMN
    assert any("+3 more not drawn" in "".join(el.itertext()) for el in graph.iter())
    assert all(
        "#114" not in (el.find("title").text or "")
        for el in _by_class(graph, "path", "edge")
    )  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_chain_report_renders_in_chromium(tmp_path):
    """Screenshot of the three-layer report; set COIN_SCALE_REPORT_PNG=path to keep a copy."""
    e = make_chain_explanation(tmp_path / "img")
    path = write_report(e, tmp_path / "out")
    shot = tmp_path / "chain.png"
    proc = _chromium(
        [f"--screenshot={shot}", "--window-size=1200,5200", path.as_uri()], tmp_path / "profile"
    )
    assert shot.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    if keep := os.environ.get("COIN_SCALE_REPORT_PNG"):
        shutil.copyfile(shot, keep)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert pixels.std() > 10, "screenshot is blank"
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((r > 200) & (g > 180) & (b < 60)).sum() > 50, "no yellow from a chain node thumbnail"
    assert ((r > 180) & (g < 60) & (b > 170)).sum() > 50, "no magenta from a chain node thumbnail"

    proc = _chromium(["--dump-dom", path.as_uri()], tmp_path / "profile2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("<image ") == 8
    assert proc.stdout.count('class="deletion-curve"') == 2
    assert "<script>" not in proc.stdout


def test_explanation_scores_are_tabled_with_reasons_for_the_unscored(tmp_path):
    import numpy as np

    from coin_scale.eval.explanation_scores import UnitScores
    from coin_scale.eval.interpscore import InterpWeights, interp_score
    from coin_scale.eval.predictive import predictive_score

    e = make_explanation(tmp_path / "img")
    first, second = e.positive[0], e.positive[1]
    scored = UnitScores(
        first.layer, first.unit, "color=red",
        predictive=predictive_score(np.array([3.0, 2.0, 2.5]), np.array([0.0, 1.0, 0.5])),
        interp=interp_score(S=0.9, C=0.25, R=0.8, H=None, weights=InterpWeights()),
    )  # fmt: skip
    from_text = UnitScores(
        second.layer, second.unit, "(color=red AND shape=<star>)", note="0 of 256 scoring images satisfy",
        formula_source="matcher",
    )  # fmt: skip
    doc = render_report(dataclasses.replace(e, unit_scores=(scored, from_text), scoring_images=256))
    assert "<h2>Explanation scores</h2>" in doc and "256 rendered scenes" in doc
    assert f"#{first.unit}</td>" in doc and ">1.00</td>" in doc  # AUC of a perfect split
    assert "not scored: 0 of 256 scoring images satisfy" in doc
    assert "read as <code>(color=red AND shape=&lt;star&gt;)</code>" in doc
    assert "Explanation scores" not in render_report(e)


def test_a_units_visualization_is_shown_first_beside_its_exemplars(tmp_path):
    e = make_explanation(tmp_path / "img")
    vis = _png(tmp_path / "img" / "vis" / "layer4_117.png", (240, 120, 0))
    first = dataclasses.replace(
        e.positive[0], visualization=Exemplar(image_path=vis, activation=14.25, label="visualization")
    )
    e = dataclasses.replace(e, positive=(first, *e.positive[1:]))
    doc = write_report(e, tmp_path / "out").read_text(encoding="utf-8")
    dom = _parse(doc)
    assert len(dom.img_srcs) == 5  # the visualization is embedded like the exemplars
    start = doc.index('<section class="unit">')
    card = doc[start : doc.index('<section class="unit">', start + 1)]
    assert "unit 117" in card and "act 14.250<br>visualization" in card
    assert card.index('class="exemplar visualization"') < card.index("act 9.810")  # first
    assert doc.count('class="exemplar visualization"') == 1


def _with_trajectory(root: Path) -> ClassExplanation:
    """The realistic explanation with its second unit explained by an agent: five steps over
    five rounds, magenta and cyan images made by its tools, one step's text an injection."""
    from coin_scale.sweep.records import TrajectoryStep

    magenta = _png(root / "agent" / "magenta.png", (230, 20, 230))
    cyan = _png(root / "agent" / "cyan.png", (20, 220, 230))
    e = make_explanation(root)
    steps = (
        TrajectoryStep(round=0, step=0, tool="exemplars", arguments='{"k": 1}', status="ok",
                       summary="1 exemplars: ex-0=5.2",
                       images=(Exemplar(image_path=e.positive[1].exemplars[0].image_path,
                                        activation=5.2, label="ex-0"),)),
        TrajectoryStep(round=1, step=0, tool="text2image", arguments='{"prompts": ["a dog"]}',
                       status="ok", summary="1 generated images: img-000000=3.1",
                       hypothesis=f"Maybe dogs? {EVIL}",
                       images=(Exemplar(image_path=magenta, activation=3.1, label="img-000000"),)),
        TrajectoryStep(round=2, step=0, tool="edit", arguments="{not json", status="invalid",
                       summary="invalid: edit: the arguments are not a JSON object"),
        TrajectoryStep(round=3, step=0, tool="edit",
                       arguments='{"image": "ex-0", "instruction": "remove the grass"}',
                       status="ok", summary="1 edit: img-000001=0.2 from ex-0=5.2",
                       images=(Exemplar(image_path=cyan, activation=0.2, label="img-000001"),)),
        TrajectoryStep(round=4, step=0, tool="finish", arguments='{"label": "green things"}',
                       status="finished", summary="finished: 'green things' (confidence 0.70)"),
    )  # fmt: skip
    agent_unit = dataclasses.replace(
        e.positive[1], explainer="openai", confidence=0.7, trajectory=steps
    )
    return dataclasses.replace(e, positive=(e.positive[0], agent_unit, e.positive[2]))


def test_an_agents_trajectory_is_shown_round_by_round(tmp_path):
    doc = render_report(_with_trajectory(tmp_path / "img"))
    assert doc.count('<details class="trajectory" open>') == 1
    section = doc[doc.index('<details class="trajectory"') :]
    section = section[: section.index("</details>")]
    assert [int(r) for r in re.findall(r'data-round="(\d+)"', section)] == [0, 1, 2, 3, 4]
    assert section.count("<img ") == 3 and "missing image" not in section
    text = " ".join(" ".join(_parse(section).text).split())
    for needle in ("5 steps in 5 rounds, 3 images", "confidence 0.70", "text2image",
                   "Maybe dogs?", "remove the grass", "img-000000 act 3.1", "{not json"):  # fmt: skip
        assert needle in text, needle
    assert EVIL in text and "<script>alert(1)" not in doc


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_a_trajectory_renders_in_chromium_with_every_image(tmp_path):
    path = write_report(_with_trajectory(tmp_path / "img"), tmp_path / "out")
    proc = _chromium(["--dump-dom", path.as_uri()], tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _parse(proc.stdout)
    assert dom.scripts == 0 and all(src.startswith("data:") for src in dom.img_srcs)
    assert len(dom.img_srcs) == 4 + 3  # the page's four images and the log's three
    rounds = re.findall(r'<li class="step" data-round="(\d+)"', proc.stdout)
    assert [int(r) for r in rounds] == [0, 1, 2, 3, 4]
    shot = tmp_path / "shot.png"
    proc = _chromium(
        [f"--screenshot={shot}", "--window-size=1200,3000", path.as_uri()], tmp_path / "profile2"
    )
    assert shot.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((r > 180) & (g < 80) & (b > 180)).sum() > 200, "the magenta generated image is not drawn"
    assert ((r < 80) & (g > 170) & (b > 180)).sum() > 200, "the cyan edited image is not drawn"
