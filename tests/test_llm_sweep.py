"""run_sweep.py with an LLM explainer, as a researcher runs it, against local fake provider servers
that speak each API's wire format through the official SDKs; the scripted policy plays the LLM."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

import run_sweep
from coin_scale.storage import connect
from coin_scale.testing.agent_policies import ExperimenterPolicy
from coin_scale.testing.fakeserver import FakeProviderServer, Faults

PLANTED_KEY = "sk-planted-7f3a9c1e5b2d4f6a8c0e"
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}


def _argv(provider: str, wh: Path, run_id: str, base_url: str | None, *extra: str) -> list[str]:
    argv = ["--model", "resnet18", "--weights", "none", "--top-k", "2", "--negatives", "1",
            "--probe-images", "60", "--warehouse", str(wh), "--run-id", run_id, "--no-progress",
            "--explainer", provider, "--rpm", "6000", "--tpm", "1e9", *extra]  # fmt: skip
    return argv + (["--base-url", base_url] if base_url else [])


@pytest.fixture()
def llm_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path.parent / "shared-cache"))
    for name in (*KEY_ENV.values(), "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _all_bytes_under(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_units_are_explained_by_an_agent_through_each_providers_sdk(
    provider, ray_cluster, tmp_path, llm_env, capsys, caplog
):
    llm_env.setenv(KEY_ENV[provider], PLANTED_KEY)
    wh = tmp_path / "wh"
    caplog.set_level(logging.DEBUG)
    with FakeProviderServer(provider, ExperimenterPolicy(), api_key=PLANTED_KEY) as server:
        # Scoring is provider-independent: scored once (openai), skipped for the other two.
        extra = () if provider == "openai" else ("--no-unit-scores",)
        assert run_sweep.main(_argv(provider, wh, "llm1", server.base_url, *extra)) == 0
        requests = len(server.log)
    out, err = capsys.readouterr()
    assert f"({provider}, confidence" in out
    # Every render ran on the render pool, none in the driver: the agents' 10 renders and 1 edit
    # per unit, plus the 60-image probe set and the 256 scoring scenes when not cached yet.
    pooled = re.search(r"rendered images: ([\d,]+) on the render pool, 0 in the driver", out)
    assert pooled is not None and int(pooled.group(1).replace(",", "")) - 33 in {0, 60, 256, 316}

    con = connect(wh)
    rows = con.sql(
        "SELECT unit, status, label, score_name, explainer FROM explanations WHERE run_id='llm1'"
    ).fetchall()
    assert len(rows) == 3 and {r[1] for r in rows} == {"ok"} and all(r[2] for r in rows)
    assert {r[3] for r in rows} == {"confidence"} and {r[4] for r in rows} == {provider}

    # One unit's whole trajectory, in order: exemplars -> render -> edit -> finish.
    unit = rows[0][0]
    steps = con.sql(
        f"SELECT round, tool, status FROM experiments WHERE run_id='llm1' AND unit={unit} "
        "ORDER BY round, step"
    ).fetchall()
    assert [s[1] for s in steps] == ["exemplars", "render", "edit", "finish"]
    assert [s[0] for s in steps] == [0, 1, 2, 3] and steps[-1][2] == "finished"

    calls = con.sql(
        "SELECT count(*), min(status), sum(input_tokens) > 0, min(provider) FROM llm_calls "
        "WHERE run_id='llm1'"
    ).fetchall()[0]
    assert calls == (requests, "ok", True, provider)

    # Free-text labels are read as formulas by the matcher and scored like any explanation.
    scored = con.sql(
        "SELECT DISTINCT unit, json_extract_string(details, '$.formula_source') FROM scores "
        "WHERE run_id='llm1' AND test='predictive'"
    ).fetchall()
    if provider == "openai":
        assert {source for _, source in scored} == {"matcher"} and len(scored) >= 1

    # The planted key is nowhere: not in the warehouse (Parquet, report, request cache), not in
    # what was printed or logged.
    leaks = [p for p, data in _all_bytes_under(wh) if PLANTED_KEY.encode() in data]
    assert leaks == []
    assert PLANTED_KEY not in out + err + caplog.text


@pytest.mark.slow
def test_a_rerun_is_answered_from_the_cache_and_faults_lose_no_unit(ray_cluster, tmp_path, llm_env):
    llm_env.setenv("OPENAI_API_KEY", PLANTED_KEY)
    wh = tmp_path / "wh"
    faults = Faults(
        script=("rate_limit", "server_error"), p_rate_limit=0.1, p_server_error=0.1,
        retry_after_s=0.05,
    )  # fmt: skip
    # 20% of attempts fail: a call failing all 6 attempts (0.2**6) would be a unit lost, and
    # its calls would then be sent again by the rerun; at 40% that happened in 1 of ~20 runs.
    with FakeProviderServer("openai", ExperimenterPolicy(), faults=faults) as server:
        assert run_sweep.main(_argv("openai", wh, "f1", server.base_url, "--no-unit-scores")) == 0
        first = len(server.log)
        assert {r.fault for r in server.log} >= {"rate_limit", "server_error"}
        assert run_sweep.main(_argv("openai", wh, "f2", server.base_url, "--no-unit-scores")) == 0
        assert len(server.log) == first  # every request of the rerun came from the cache
    con = connect(wh)
    assert con.sql(
        "SELECT run_id, count(*) FILTER (WHERE status = 'ok') FROM explanations GROUP BY run_id "
        "ORDER BY run_id"
    ).fetchall() == [("f1", 3), ("f2", 3)]
    retried, cached = con.sql(
        "SELECT sum(retries) FILTER (WHERE run_id='f1'), "
        "bool_and(status = 'cached') FILTER (WHERE run_id='f2') FROM llm_calls"
    ).fetchall()[0]
    assert retried > 0 and cached


def test_a_missing_key_stops_before_any_work(tmp_path, llm_env, capsys):
    wh = tmp_path / "wh"
    assert run_sweep.main(_argv("anthropic", wh, "k1", None)) == 2
    err = capsys.readouterr().err
    assert "ANTHROPIC_API_KEY" in err and "--explainer offline" in err
    assert "Traceback" not in err and not wh.exists()


def test_dry_run_prints_the_cost_and_sends_nothing(tmp_path, llm_env, capsys):
    wh = tmp_path / "wh"
    with FakeProviderServer("openai", ExperimenterPolicy()) as server:
        code = run_sweep.main(
            _argv("openai", wh, "d1", server.base_url, "--dry-run", "--llm-model", "gpt-4o")
        )
        assert code == 0 and len(server.log) == 0
    out = capsys.readouterr().out
    for figure in ("calls", "input tokens", "output tokens", "cost", "time", "OPENAI_API_KEY"):
        assert figure in out
    assert "$" in out and "min" in out and "MISSING" in out and not wh.exists()
