"""The replicas' CUDA path (issue 19, item 4): bf16 autocast, channels-last, decoding on several
threads, the SAE on the replica's device. Marked `gpu`: run wherever CUDA exists, skipped here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coin_scale.models import ModelSource, build_module, describe_layers, find_layer, resolve_model
from coin_scale.models.replica_core import ReplicaCore

pytestmark = pytest.mark.gpu


def _resnet18():  # type: ignore[no-untyped-def]
    payload = resolve_model(ModelSource(model="resnet18", weights="none"))
    layer = find_layer(describe_layers(build_module(payload), payload.arch, 224), "layer4", "resnet18")
    return payload, layer


def test_a_cuda_replica_matches_the_cpu_one_within_bf16(probe_dir):
    from coin_scale.probe import scan_probe

    payload, layer = _resnet18()
    items = [(im.index, im.path) for im in scan_probe(str(probe_dir)).images]
    cpu = ReplicaCore(payload, {layer.name: layer.layout}, ("max",), device="cpu", threads=2)
    gpu = ReplicaCore(payload, {layer.name: layer.layout}, ("max",), device="cuda", threads=8)
    assert gpu.decode_threads == 7  # the cores decode while the GPU computes
    want, got = cpu.run(0, items), gpu.run(0, items)
    assert got.failures == want.failures and np.array_equal(got.indices, want.indices)
    a, b = want.activations[layer.name]["max"], got.activations[layer.name]["max"]
    assert b.dtype == np.float32  # reduced on the device, returned in float32
    # bf16 autocast: a few parts in a hundred of the layer's scale.
    assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
    param = next(gpu.capture.module.parameters())
    assert param.device.type == "cuda"
    assert gpu.capture.module.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with gpu.exclusive() as module:  # feature visualization: a CPU copy, made once
        assert next(module.parameters()).device.type == "cpu"


def test_run_pixels_and_the_sae_run_on_the_replicas_device(tmp_path):
    from coin_scale.models.activations import SAEUnits
    from coin_scale.models.sae import SparseAutoencoder
    from coin_scale.models.sae_config import SAEConfig

    payload, layer = _resnet18()
    config = SAEConfig(model="resnet18", layer=layer.name, d_in=layer.units, expansion=2, k=8)
    torch.manual_seed(0)
    sae = SparseAutoencoder(config.d_in, config.d_sae, config.k, config.kind).eval()
    units = SAEUnits(config=config, state={k: v.clone() for k, v in sae.state_dict().items()}, sha256="x")
    core = ReplicaCore(payload, {layer.name: layer.layout}, ("max",), device="cuda",
                       unit_transforms={layer.name: units})  # fmt: skip
    pixels = np.random.default_rng(0).integers(0, 256, (4, 3, 224, 224), dtype=np.uint8)
    # The codes are encoded on the CUDA maps (an SAE left on the CPU would raise here) in float32.
    out = core.run_pixels(0, pixels).activations[layer.name]["max"]
    assert out.shape == (4, config.d_sae) and out.dtype == np.float32 and np.isfinite(out).all()
    cpu = ReplicaCore(payload, {layer.name: layer.layout}, ("max",), device="cpu",
                      unit_transforms={layer.name: units})  # fmt: skip
    want = cpu.run_pixels(0, pixels).activations[layer.name]["max"]
    assert np.corrcoef(want.ravel(), out.ravel())[0, 1] > 0.95  # bf16 maps, fp32 codes
