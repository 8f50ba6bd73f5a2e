"""The import rules of coin_scale's packages (coin_scale/layering.py): imports run one way, no
cycle between packages, the core never imports ray or actors, no production package imports the
test doubles. Every import counts, at a module's top or inside a function."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from coin_scale.layering import analyse, cycle_lines

REPO = Path(__file__).resolve().parents[1]


def test_coin_scale_keeps_its_import_rules() -> None:
    report = analyse(REPO)
    problems = cycle_lines(report) + report.violations
    assert not problems, "breaks of the import rules:\n" + "\n".join(problems)


def test_the_package_order_is_printed_by_a_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coin_scale.layering"], cwd=REPO, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("packages in import order")
    order = [line.split()[0] for line in lines[1:] if line.startswith("  ")]
    # Lower ranks come first: the ground before the foundations, the face last.
    assert order.index("errors") < order.index("models") < order.index("dissect")
    assert order.index("dissect") < order.index("sweep") < order.index("cli")
    assert lines[-1] == "import rules hold"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "coin_scale" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_a_function_level_import_is_found_with_its_file_and_line(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "models/__init__.py": "",
        "models/zoo.py": "def build():\n    from coin_scale.probe.folder import scan\n",
        "probe/__init__.py": "",
        "probe/folder.py": "from coin_scale.models import zoo\n\ndef scan():\n    pass\n",
    })  # fmt: skip
    report = analyse(root)
    assert report.cycles == [["models", "probe"]]
    text = "\n".join(cycle_lines(report))
    assert "models/zoo.py:2: coin_scale.models.zoo -> coin_scale.probe.folder" in text
    assert "probe/folder.py:1: coin_scale.probe.folder -> coin_scale.models" in text


def test_ray_actors_upward_imports_and_test_doubles_in_the_core_are_refused(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "dissect/__init__.py": "",
        "dissect/pipeline.py": (
            "import ray\n"
            "def run():\n"
            "    from coin_scale.actors.pool import ReplicaPool\n"
            "    from coin_scale.sweep import run_sweep\n"
        ),
        "llm/__init__.py": "from coin_scale.testing import fakeserver\n",
        "actors/__init__.py": "", "actors/pool.py": "",
        "sweep/__init__.py": "", "testing/__init__.py": "", "testing/fakeserver.py": "",
        "bench/__init__.py": "from coin_scale.testing import fakeserver\n",
    })  # fmt: skip
    report = analyse(root)
    text = "\n".join(report.violations)
    assert "dissect/pipeline.py:1: coin_scale.dissect.pipeline imports ray" in text
    assert "dissect/pipeline.py:3: coin_scale.dissect.pipeline imports coin_scale.actors.pool" in text
    assert "(stages) imports coin_scale.sweep (drivers)" in text
    assert "llm/__init__.py:1: coin_scale.llm imports the test doubles" in text
    assert "bench" not in text  # the benchmarks run against the fake servers on purpose
    assert not report.ok


def test_a_package_without_a_rank_is_a_break(tmp_path: Path) -> None:
    root = _package(tmp_path, {"__init__.py": "", "mystery/__init__.py": ""})
    assert any("'mystery' has no rank" in v for v in analyse(root).violations)
