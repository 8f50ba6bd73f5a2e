"""Where the explained model's forward passes ran: the ledger, the driver's hook, and the sweep's
accounting in its closing lines and `--json`."""

from __future__ import annotations

import json

import torch
from torch import nn

import run_sweep
from coin_scale.accounting import (
    FORWARDS,
    RENDERS,
    CountedRenderer,
    ForwardCounts,
    count_driver_forwards,
)
from tests.test_sweep import _target


def test_every_call_of_the_drivers_model_counts_with_its_images():
    module = count_driver_forwards(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))
    assert count_driver_forwards(module) is module  # hooked once
    before = FORWARDS.snapshot()
    module(torch.zeros(5, 3, 2, 2))
    x = torch.zeros(3, 3, 2, 2, requires_grad=True)
    module(x).sum().backward()  # a gradient pass is a forward pass too
    used = FORWARDS.snapshot().minus(before)
    assert used.passes == {"replicas": 0, "driver": 2} and used.images == {"replicas": 0, "driver": 8}
    assert used.to_dict()["driver"] == {"passes": 2, "images": 8}
    assert used.words() == (
        "forward passes of the model: 0 on the replicas (0 images), 2 in the driver (8 images)"
    )


def test_replica_batches_count_as_the_replicas():
    before = FORWARDS.snapshot()
    FORWARDS.count("replicas", 32)
    FORWARDS.count("replicas", 7)
    used = FORWARDS.snapshot().minus(before)
    assert used == ForwardCounts(passes={"replicas": 2, "driver": 0}, images={"replicas": 39, "driver": 0})


def test_renders_count_where_they_ran_and_a_cached_probe_set_renders_nothing(tmp_path):
    from coin_scale.probe.rendered import rendered_probe
    from unity_pool.scene import Scene, SceneObject
    from unity_pool.tools import LocalRenderer

    before = RENDERS.snapshot()
    renderer = CountedRenderer(LocalRenderer())
    scenes = [Scene(objects=(SceneObject(shape="star", color="red"),), width=32, height=32, seed=i)
              for i in range(3)]  # fmt: skip
    assert len(renderer.render_many(scenes)) == 3
    rendered_probe(8, 32, progress=False, root_dir=tmp_path)
    rendered_probe(8, 32, progress=False, root_dir=tmp_path)  # the second is read from the cache
    used = RENDERS.snapshot().minus(before)
    assert used.to_dict() == {"render_pool": 0, "driver": 11}
    assert used.words() == "rendered images: 0 on the render pool, 11 in the driver"


def test_run_sweep_json_is_one_object_with_where_the_forward_passes_ran(tmp_path, capsys):
    argv = ["--image", str(_target(tmp_path)), "--model", "resnet18", "--weights", "none",
            "--top-k", "3", "--probe", "none", "--warehouse", str(tmp_path / "wh"), "--run-id", "j1"]  # fmt: skip
    assert run_sweep.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    assert result["run_id"] == "j1" and result["random_weights"] is True
    assert result["predicted"]["class"] and len(result["positive"]) == 3
    assert {"unit", "contribution", "label", "status"} <= result["positive"][0].keys()
    assert result["text"].startswith("Predicted ") and "model and attribution" in result["phases_s"]
    passes = result["forward_passes"]
    # No probe, so no dissection; the layer listing, the prediction, the attribution and the
    # faithfulness ablations ran on the sweep's model replica: the driver holds no model.
    assert passes["driver"] == {"passes": 0, "images": 0}
    # (layer4 feeds resnet18's linear head: the ablations follow from one pass, exactly)
    assert passes["replicas"]["passes"] >= 3 and passes["replicas"]["images"] >= 3
    assert result["rendered_images"] == {"render_pool": 0, "driver": 0}  # no probe: no renders
    assert run_sweep.main([*argv[:-2], "--run-id", "j2"]) == 0
    out = capsys.readouterr().out
    assert "forward passes of the model: " in out and ", 0 in the driver (0 images)" in out
    assert "; rendered images: 0 on the render pool, 0 in the driver" in out
