"""LLM agents on photographs, as a researcher runs them: `run_sweep.py` over a folder of photos
with `--image-generator diffusion --diffusion-model tiny-random --describe MODEL`, so each agent
can have images described and summarized by a vision model, generate images from text and edit a
photograph exemplar by instruction, every new image measured on its unit. The scripted `PhotoExperimenter` plays the LLM through each provider's SDK against a local
fake server; the diffusion pipelines are testing-size ones with random weights, served by the
render pool's workers (real diffusers code, no download)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import run_sweep
from coin_scale.runtime.pools import GENERATOR_POOL_STARTS
from coin_scale.storage import connect
from coin_scale.testing.agent_policies import TEST_PROMPTS, PhotoExperimenter
from coin_scale.testing.fakeserver import FakeProviderServer

KEY = "sk-planted-photo-agents-5150"
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """48 small generated photographs in 3 labelled folders."""
    from coin_scale.bench.images import write_synthetic_images

    root = tmp_path_factory.mktemp("photos")
    write_synthetic_images(root, 48, size=(64, 48), seed=5, classes=3)
    return root


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path.parent / "shared-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in (*KEY_ENV.values(), "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _argv(photos, wh, provider: str, base_url: str, *extra: str) -> list[str]:
    return ["--model", "resnet18", "--weights", "none", "--top-k", "2", "--negatives", "0",
            "--probe", str(photos), "--warehouse", str(wh), "--run-id", "p1", "--no-progress",
            "--explainer", provider, "--rpm", "60000", "--tpm", "1e12", "--base-url", base_url,
            "--image-generator", "diffusion", "--diffusion-model", "tiny-random",
            "--describe", "cheap-vision-model", "--no-unit-scores", "--json", *extra]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_agents_generate_images_and_edit_a_photo_exemplar(
    provider, ray_cluster, photos, tmp_path, env, capsys
):
    env.setenv(KEY_ENV[provider], KEY)
    wh = tmp_path / "wh"
    starts = GENERATOR_POOL_STARTS[0]
    with FakeProviderServer(provider, PhotoExperimenter(), api_key=KEY) as server:
        assert run_sweep.main(_argv(photos, wh, provider, server.base_url)) == 0
    # The agents and the predictive evaluation share one set of diffusion workers.
    assert GENERATOR_POOL_STARTS[0] - starts == 1
    out = capsys.readouterr().out
    outcome = json.loads(out[out.index("{") :])
    units = outcome["positive"]
    assert len(units) == 2 and {u["status"] for u in units} == {"ok"}
    assert outcome["rendered_images"]["driver"] == 0

    con = connect(wh)
    for u in units:
        steps = con.sql(
            "SELECT tool, status, arguments_json, result_summary FROM experiments WHERE run_id = 'p1' AND "
            f"unit = {u['unit']} ORDER BY round, step"
        ).fetchall()
        tools = ["exemplars", "describe", "summarize", "crop", "text2image", "edit", "finish"]
        assert [s[0] for s in steps] == tools, steps
        assert {s[1] for s in steps[:-1]} == {"ok"} and steps[-1][1] == "finished"
        described, summarized, cropped, generated, edit = (steps[i][3] for i in (1, 2, 3, 4, 5))
        assert re.match(r"crop of ex-0 at \[\d+, \d+, \d+, \d+\] \(\d+x\d+\)", cropped)
        assert "ex-0: a photo with a bright patch, image 1" in described
        assert "All 3 images show a furry animal outdoors." in summarized
        # Every new image was measured on the unit: id=activation (prompt) in the summary.
        assert len(re.findall(r"img-\d+=[-\d.e+]+", generated)) == 2
        assert json.loads(steps[5][2]) == {"image": "ex-0", "instruction": "remove the background"}
        assert re.search(r"from ex-0=[-\d.e+]+ as told: \"remove the background\"", edit)
        # The label is the prompt of the generated image that drove the unit most.
        assert u["label"] in PhotoExperimenter().prompts
    # Each step's images are stored as thumbnails beside the tables, with the unit's activation.
    images = con.sql(
        "SELECT unit, round, step, position, image_id, activation, image_path FROM agent_images "
        "WHERE run_id = 'p1' ORDER BY unit, round, step, position"
    ).fetchall()
    for u in units:
        mine = [r for r in images if r[0] == u["unit"]]
        by_step = {}
        for r in mine:
            by_step.setdefault(r[1], []).append(r[4])
        # the exemplars step: masked where the unit fires (MAIA's view); the plain images are
        # the first message's, sent with every request, so they are not attached again
        assert by_step[0] == [f"ex-{i} masked" for i in range(4)]
        assert by_step[3] == ["ex-0 crop"]
        assert len(by_step[4]) == 2 and all(i.startswith("img-") for i in by_step[4])
        assert len(by_step[5]) == 1  # the edit
        assert all(Path(r[6]).is_file() and r[5] is not None for r in mine)
    hypothesis = con.sql(
        "SELECT assistant_text FROM experiments WHERE run_id = 'p1' AND tool = 'text2image'"
    ).fetchall()
    assert {h[0] for h in hypothesis} == {
        "Hypothesis: the unit responds to animals on grass. Testing it with generated images of a "
        "dog on grass and of an empty room."
    }
    # The report shows each unit's trajectory, round by round, with every image embedded.
    report = (wh / "reports" / "p1" / "report.html").read_text()
    assert report.count('<details class="trajectory" open>') == len(units)
    first = report[report.index('<details class="trajectory"') :]
    first = first[: first.index("</details>")]
    rounds = [int(r) for r in re.findall(r'<li class="step" data-round="(\d+)"', first)]
    assert rounds == [0, 1, 2, 3, 4, 5, 6]
    assert first.count("<img ") == len(images) // len(units) and "missing image" not in first
    assert "Hypothesis: the unit responds to animals on grass" in first

    # MAIA's predictive evaluation: the agent's own test prompts (its finish) against five
    # neutral ones, the images generated on the render pool and measured on the unit; in the
    # JSON, the table, the report.
    for u in units:
        g = u["generated"]
        assert g is not None and g["prompts_from"] == "agent"
        assert tuple(g["positive_prompts"]) == TEST_PROMPTS and len(g["neutral_prompts"]) == 5
        assert 0.0 <= g["auc"] <= 1.0 and g["delta"] == pytest.approx(
            g["mean_positive"] - g["mean_neutral"]
        )
    predictive = con.sql(
        "SELECT unit, metric, value, details FROM scores WHERE run_id = 'p1' AND test = "
        "'predictive' AND metric LIKE 'generated_%' ORDER BY unit, metric"
    ).fetchall()
    assert {(r[0], r[1]) for r in predictive} >= {
        (u["unit"], m) for u in units
        for m in ("generated_auc", "generated_delta", "generated_mean_neutral",
                  "generated_mean_positive")
    }  # fmt: skip
    assert {json.loads(r[3])["protocol"] for r in predictive} == {"generated images (MAIA)"}
    assert {json.loads(r[3])["prompts_from"] for r in predictive} == {"agent"}
    assert report.count('class="kv generated"') == len(units)
    assert "generated images: the agent&#x27;s 3 prompts" in report or (
        "generated images: the agent's 3 prompts" in report
    )
    # 3 images per unit by its agent, 5 neutral images and the agents' 3 test prompts (the same
    # for every unit here: generated once)
    assert outcome["rendered_images"]["render_pool"] == 3 * len(units) + 5 + 3

    # The describe model's calls are in the ledger under its own name: two per unit.
    ledger = con.sql(
        "SELECT model, count(*), min(status), min(unit) >= 0 FROM llm_calls WHERE run_id = 'p1' "
        "GROUP BY model ORDER BY model"
    ).fetchall()
    models = {row[0]: row for row in ledger}
    assert models["cheap-vision-model"][1:] == (2 * len(units), "ok", True)
    assert len(models) == 2


def test_the_dry_run_counts_generation_and_description_calls(env, capsys):
    argv = ["--explainer", "openai", "--dry-run", "--image-generator", "diffusion",
            "--diffusion-model", "tiny-random", "--describe", "--top-k", "3", "--negatives", "1"]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "dry run: 4 units explained by openai:" in out
    assert "describe / summarize by openai:gpt-4o-mini (gateways of their own):" in out
    assert re.search(r"calls\s+8\s+\(at most 48\)", out)
    assert "images by diffusion (text2image tiny-random, edit tiny-random)" in out
    assert re.search(r"generated\s+8\s+\(at most 768; 2 steps each\)", out)
    assert re.search(r"edits\s+4\s+\(at most 48; 2 steps each\)", out)


def test_a_generator_model_that_is_not_here_stops_before_any_work(env, tmp_path, capsys):
    """Offline, the default diffusion models are not cached: one line naming the model, the
    cache searched and the fixes, exit 2, no warehouse written."""
    env.setenv("OPENAI_API_KEY", KEY)
    wh = tmp_path / "wh"
    argv = ["--explainer", "openai", "--image-generator", "diffusion", "--warehouse", str(wh)]
    assert run_sweep.main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    (line,) = [x for x in err if x.startswith("run_sweep.py: error:")]
    assert "stabilityai/sd-turbo" in line and "--allow-downloads" in line
    assert not wh.exists()
