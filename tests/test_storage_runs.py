"""The run recorder (`coin_scale.storage.runs`): one `runs` row per run, 'running' while it works,
then 'complete' or 'failed' with the error; never a secret, never half a file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from coin_scale.errors import UserError
from coin_scale.storage import Warehouse, connect
from coin_scale.storage.runs import RunRecorder, error_message, new_run_id


def recorder(wh: Warehouse, run_id: str = "r1", **fields) -> RunRecorder:
    return RunRecorder(
        warehouse=wh, run_id=run_id, command="test", model="resnet18", weights="none",
        layers=["layer3", "layer4"], probe="/data/probe", config={"top_k": 8, **fields},
    )  # fmt: skip


def stored(wh: Warehouse) -> list[dict]:
    rel = connect(wh, threads=1).sql("SELECT * FROM runs ORDER BY run_id")
    return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_new_run_id_is_time_then_six_hex_digits() -> None:
    first, second = new_run_id(), new_run_id()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", first) and first != second


def test_running_while_it_works_then_complete(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "wh")
    rec = recorder(wh)
    with rec as entered:
        assert entered is rec and rec.status == "running"
        (during,) = stored(wh)  # a query during the run sees it running
        assert (during["status"], during["command"], during["layers"]) == (
            "running", "test", ["layer3", "layer4"],
        )  # fmt: skip
        assert during["finished_at"] is None and during["n_images"] is None
        rec.n_images, rec.n_failed, rec.message = 37, 1, "1 unreadable image"
    (after,) = stored(wh)
    assert (after["status"], after["n_images"], after["n_failed"], after["message"]) == (
        "complete", 37, 1, "1 unreadable image",
    )  # fmt: skip
    assert after["started_at"] == during["started_at"] < after["finished_at"]
    assert json.loads(after["config_json"]) == {"top_k": 8}
    assert files(tmp_path / "wh") == ["runs/r1.parquet"]  # one row per run, rewritten


def test_an_exception_leaves_a_failed_row_with_its_one_line_message_and_propagates(
    tmp_path: Path,
) -> None:
    wh = Warehouse(tmp_path / "wh")
    with pytest.raises(RuntimeError, match="replica died"), recorder(wh):
        raise RuntimeError("replica died\n  on node 3")
    (row,) = stored(wh)
    assert (row["status"], row["message"]) == ("failed", "RuntimeError: replica died on node 3")
    assert row["finished_at"] >= row["started_at"]
    assert files(tmp_path / "wh") == ["runs/r1.parquet"] and not wh.tmp_files("runs")

    with pytest.raises(UserError), recorder(wh, "r2"):
        raise UserError("none of the 3 images under /p could be read")
    with pytest.raises(KeyboardInterrupt), recorder(wh, "r3"):
        raise KeyboardInterrupt
    messages = {r["run_id"]: (r["status"], r["message"]) for r in stored(wh)}
    assert messages["r2"] == ("failed", "none of the 3 images under /p could be read")
    assert messages["r3"] == ("failed", "interrupted")


def test_secrets_never_reach_the_row(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value-42")
    wh = Warehouse(tmp_path / "wh")
    rec = recorder(
        wh, warehouse="s3://AKIAEXAMPLE:aws-secret-value-42@bucket/wh?secret_key=abc&region=x",
        note="held sk-test-0123456789abcdef",
    )  # fmt: skip
    rec.secrets = ["in-memory-key-9876"]
    with pytest.raises(RuntimeError), rec:
        raise RuntimeError(
            "401 for key sk-test-0123456789abcdef / in-memory-key-9876 at gs://u:pw@bucket/x"
        )
    (row,) = stored(wh)
    text = row["config_json"] + row["message"]
    for secret in ["sk-test-0123456789abcdef", "aws-secret-value-42", "in-memory-key-9876",
                   "AKIAEXAMPLE", "secret_key=abc", "u:pw@"]:  # fmt: skip
        assert secret not in text
    assert row["message"] == "RuntimeError: 401 for key [REDACTED] / [REDACTED] at gs://bucket/x"
    config = json.loads(row["config_json"])
    assert config["warehouse"] == "s3://bucket/wh?secret_key=[REDACTED]&region=x"


def test_explicit_start_complete_and_fail(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "wh")
    rec = recorder(wh)
    assert rec.fail(ValueError("before the start")) is False  # a run never started: no row
    assert not (tmp_path / "wh" / "runs").exists()
    with pytest.raises(RuntimeError, match="before it was started"):
        rec.complete()
    rec.start()
    with pytest.raises(RuntimeError, match="already started"):
        rec.start()
    rec.complete(n_images=5, n_failed=0)
    assert rec.fail(ValueError("after the end")) is False  # the first end stands
    (row,) = stored(wh)
    assert (row["status"], row["n_images"], row["message"]) == ("complete", 5, None)


def test_a_failed_row_that_cannot_be_written_does_not_hide_the_error(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    wh = Warehouse(tmp_path / "wh")
    rec = recorder(wh).start()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(wh, "write", broken)
    assert rec.fail(RuntimeError("out of memory")) is False
    assert "could not record run r1 as failed: OSError: disk full" in caplog.text
    monkeypatch.undo()
    assert stored(wh)[0]["status"] == "running"


def test_error_message_is_one_line_and_bounded() -> None:
    assert error_message(KeyError("layer9")) == "KeyError: 'layer9'"
    assert error_message(RuntimeError()) == "RuntimeError"
    assert error_message(UserError("bad\ninput")) == "bad input"
    assert len(error_message(ValueError("x" * 2000))) == 500
