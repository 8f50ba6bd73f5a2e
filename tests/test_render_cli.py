"""`coin-scale render` end to end: files, columns, byte-identical reruns, refusals, atomicity."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from coin_scale.cli import main
from unity_pool import probeset, vocab


def _cli(argv: list[str]) -> int:
    """The real `coin-scale` entry point (its parser, every subcommand's registration, its error
    handling): these tests fail when the CLI does not import or `render` is not wired into it."""
    return main(argv)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _render(out: Path, *extra: str, n: int = 24, seed: int = 3) -> int:
    argv = ["render", "--n", str(n), "--seed", str(seed), "--out", str(out), "--size", "48"]
    return _cli([*argv, "--no-progress", *extra])


def test_render_writes_images_scenes_and_attributes(tmp_path: Path) -> None:
    out = tmp_path / "probe"
    assert _render(out) == 0
    table = pq.read_table(out / "attributes.parquet")
    assert table.column_names == ["image_path", *vocab.ATTRIBUTES]
    assert table.num_rows == 24
    rows = table.to_pylist()
    assert rows[0]["image_path"] == "images/00000.png"
    assert all((out / row["image_path"]).is_file() for row in rows)
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:05d}.png" for i in range(24)]
    assert table.schema.field("n_objects").type == "int64"
    assert {row["shape"] for row in rows} == set(vocab.SHAPES)  # 24 >= 10: all shapes present
    lines = (out / "scenes.jsonl").read_text().splitlines()
    assert len(lines) == 24
    first = json.loads(lines[0])
    assert first["image_path"] == "images/00000.png" and first["scene"]["version"] == 1
    assert json.loads((out / "probeset.json").read_text())["params"] == {
        "n": 24,
        "seed": 3,
        "size": 48,
    }


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    assert _render(tmp_path / "a") == 0
    assert _render(tmp_path / "b") == 0
    assert _render(tmp_path / "c", seed=4) == 0
    a, b, c = (_hashes(tmp_path / d) for d in "abc")
    assert a == b
    assert a["images/00000.png"] != c["images/00000.png"]


def test_workers_give_the_same_bytes(tmp_path: Path) -> None:
    assert _render(tmp_path / "one", n=12) == 0
    assert _render(tmp_path / "two", "--workers", "2", n=12) == 0
    assert _hashes(tmp_path / "one") == _hashes(tmp_path / "two")


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _render(tmp_path / "x", n=0) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("coin-scale render: error: --n") and "\n" not in err
    assert _render(tmp_path / "x", "--workers", "0") == 2
    assert _render(tmp_path / "x", "--size", "2") == 2
    assert "size" in capsys.readouterr().err


def test_refuses_a_foreign_non_empty_directory_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _render(out) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "--overwrite" in err and err.count("\n") == 1
    assert not (out / "images").exists()
    assert _render(out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "attributes.parquet").is_file()


def test_rerun_with_same_flags_is_allowed_and_different_flags_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "p"
    assert _render(out) == 0
    before = _hashes(out)
    assert _render(out) == 0
    assert _hashes(out) == before
    assert _render(out, n=10) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _render(out, "--overwrite", n=10) == 0
    assert pq.read_table(out / "attributes.parquet").num_rows == 10
    assert len(list((out / "images").iterdir())) == 10  # stale images of the bigger run removed


def test_a_killed_run_leaves_no_index_of_missing_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "p"
    assert _render(out) == 0
    real = probeset._render_job
    calls = {"n": 0}

    def dies_halfway(job):  # noqa: ANN001, ANN202 - test double
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(probeset, "_render_job", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        probeset.write_probe_set(
            out, probeset.ProbeSetParams(n=24, seed=3, size=48), progress=False
        )
    assert not (out / "attributes.parquet").exists()
    assert not list(out.rglob("*.tmp"))
    # The rerun had the same parameters, so it resumed: the finished images of the first run stay.
    assert len(list((out / "images").glob("*.png"))) == 24
    monkeypatch.setattr(probeset, "_render_job", real)
    assert _render(out) == 0  # the marker still says it is ours: a rerun completes it
    assert pq.read_table(out / "attributes.parquet").num_rows == 24


def test_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert _render(target) == 2
    assert "is a file" in capsys.readouterr().err


def _small_disk(path: Path, size: str) -> bool:
    """Mount a tmpfs of `size` at `path` (root only); False where that is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


def test_a_full_disk_loses_nothing_already_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    disk = tmp_path / "disk"
    if not _small_disk(disk, "96k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        out = disk / "p"
        argv = ["render", "--n", "60", "--seed", "5", "--size", "64", "--out", str(out),
                "--no-progress"]  # fmt: skip
        assert _cli(argv) == 3
        err = capsys.readouterr().err
        assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
        written = sorted((out / "images").glob("*.png"))
        assert written and not (out / "attributes.parquet").exists()
        assert not list((out / "images").glob(".*.tmp"))
        before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in written}
        for p in written:  # every image that was written is a whole, readable PNG
            Image.open(p).verify()

        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        assert _cli(argv) == 0  # the same command resumes: nothing re-rendered, nothing lost
        for name, (data, mtime) in before.items():
            path = out / "images" / name
            assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime
        reference = tmp_path / "ref"
        assert _cli(["render", "--n", "60", "--seed", "5", "--size", "64", "--out", str(reference),
                     "--no-progress"]) == 0  # fmt: skip
        assert _hashes(out) == _hashes(reference)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
