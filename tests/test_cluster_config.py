"""cluster.yaml is a valid Ray cluster-launcher config with the shape docs/cluster.md promises."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_validates_against_rays_own_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)


def test_the_head_takes_no_work_and_gpu_workers_offer_renderer_slots():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    assert any("--num-cpus=0" in c for c in config["head_start_ray_commands"])
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"].get("unity_slot", 0) >= 1 for t in workers)
    assert any("scripts/setup.sh" in c for c in config["setup_commands"])


def test_the_cluster_guide_names_every_step():
    guide = (ROOT / "docs" / "cluster.md").read_text()
    for step in ("ray up cluster.yaml", "ray job submit", "--explainer offline", "--dry-run",
                 "ray job logs", "ray down cluster.yaml", "coin-scale query"):  # fmt: skip
        assert step in guide, step
