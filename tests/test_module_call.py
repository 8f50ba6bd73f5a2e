"""Issue 19: the model's work as picklable `ModuleCall`s, run on a replica's model with its
forward passes counted; only coin-scale's own top-level functions are accepted."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from coin_scale.chain.attribution import class_probabilities, unit_contributions
from coin_scale.chain.graph import check_layer_path
from coin_scale.models import ModelSource, build_module, describe_layers, resolve_model
from coin_scale.models.layers import last_block
from coin_scale.models.module_call import ModuleCall, run_counted
from coin_scale.models.replica_core import ReplicaCore


def _double(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x) * 2


def test_only_top_level_coin_scale_functions_travel():
    with pytest.raises(ValueError, match="top-level coin-scale function"):
        ModuleCall.of(lambda module: module)
    with pytest.raises(ValueError, match="top-level coin-scale function"):
        ModuleCall.of(_double, torch.zeros(1))  # a test's function, not the package's
    with pytest.raises(ValueError, match="top-level coin-scale function"):
        ModuleCall.of(torch.nn.functional.relu)
    with pytest.raises(ValueError, match="top-level coin-scale function"):
        ModuleCall.of(ReplicaCore.call)  # a method, not a top-level function
    call = ModuleCall.of(class_probabilities, torch.zeros(2, 3))
    again = pickle.loads(pickle.dumps(call))  # travels by name, with plain data
    assert again.fn is class_probabilities and torch.equal(again.args[0], call.args[0])
    assert call.name == "coin_scale.chain.attribution.class_probabilities"


def test_a_call_counts_every_pass_gradients_included():
    module = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    x = torch.randn(5, 3, 2, 2)
    counted = run_counted(ModuleCall.of(class_probabilities, x), module)
    assert (counted.passes, counted.images) == (1, 5)
    torch.testing.assert_close(counted.value, module(x).softmax(dim=1))
    assert not module._forward_pre_hooks  # the counting hook is gone after the call


def test_a_replica_runs_the_sweeps_calls_as_the_driver_would(tmp_path):
    """Layer listing, last block, path check and exact attribution on a `ReplicaCore` (the
    replica's model, built from the payload) equal the same functions on a driver-side module."""
    payload = resolve_model(ModelSource(model="resnet18", weights="none", seed=3))
    core = ReplicaCore(payload, {}, ("max",), device="cpu", threads=1)
    module = build_module(payload).eval()

    def on_replica(call: ModuleCall, passes: int = 1):
        result = core.call(7, call)
        assert result.batch_id == 7 and result.passes == passes
        return result.value

    layers = on_replica(ModuleCall.of(describe_layers, payload.arch, 64))
    assert [x.name for x in layers] == [x.name for x in describe_layers(module, payload.arch, 64)]
    block = on_replica(ModuleCall.of(last_block, layers), passes=0)  # reads the structure
    assert block.name == "layer4"
    x = torch.randn(1, 3, 64, 64)
    on_replica(ModuleCall.of(check_layer_path, x, ["layer3", "layer4"]), passes=2)
    got = on_replica(ModuleCall.of(unit_contributions, block.name, block.layout, x))
    want = unit_contributions(module, block.name, block.layout, x)
    assert got.exact and got.class_index == want.class_index
    torch.testing.assert_close(got.contributions, want.contributions, rtol=1e-4, atol=1e-5)
