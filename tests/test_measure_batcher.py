"""Many agents' measurements share forward passes (issue 19, item 1): the batcher's core without
Ray, the meter against the driver-side meter, and the agents' measurements on Ray replicas."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from coin_scale.accounting import FORWARDS
from coin_scale.agent import TorchUnitMeter
from coin_scale.agent.batched_meter import BatchedUnitMeter, MeasureBatcher
from coin_scale.models.activations import SAEUnits
from coin_scale.models.layers import describe_layers, last_block
from coin_scale.models.payload import ModelPayload
from coin_scale.models.preprocess import Preprocess
from coin_scale.models.probe_cnn import probe_cnn
from coin_scale.models.replica_core import ReplicaCore

PREPROCESS = Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _pixels(n: int, start: int = 0) -> np.ndarray:
    """n distinct uint8 images: image i is filled with (start + i) % 256."""
    values = (np.arange(start, start + n) % 256).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (n, 3, 4, 4)).copy()


class _Recorder:
    """A forward that returns each image's mean as unit 0 and twice it as unit 1."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(pixels))
        time.sleep(self.delay_s)
        mean = pixels.reshape(len(pixels), -1).mean(axis=1)
        return np.stack([mean, 2 * mean], axis=1).astype(np.float32)


def test_thirty_two_agents_measuring_ten_images_each_share_a_few_passes():
    forward = _Recorder(delay_s=0.05)
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(32)

    def agent(a: int) -> None:
        start.wait()
        results[a] = batcher.activations(_pixels(10, start=10 * a))

    with MeasureBatcher(forward, max_images=64, window_s=0.02, in_flight=1) as batcher:
        threads = [threading.Thread(target=agent, args=(a,)) for a in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for a in range(32):  # every agent got its own rows, in order
        expected = (np.arange(10 * a, 10 * a + 10) % 256).astype(np.float32)
        np.testing.assert_array_equal(results[a][:, 0], expected)
        np.testing.assert_array_equal(results[a][:, 1], 2 * expected)
    # 320 images, 256 distinct (values wrap at 256): each repeat is read from the memo or shares
    # its batch's pass, unless its twin was still in flight in another batch
    passed = sum(forward.sizes)
    assert 256 <= passed <= 320 and max(forward.sizes) <= 64
    assert passed + batcher.memo_hits == 320
    assert len(forward.sizes) <= 8, forward.sizes  # in 5 full passes or fewer, not 32
    assert (batcher.batches, batcher.images) == (len(forward.sizes), passed)


def test_an_image_is_measured_once_per_layer_and_repeats_come_from_the_memo():
    forward = _Recorder()
    with MeasureBatcher(forward, max_images=64, window_s=0.0, memo_images=8) as batcher:
        first = batcher.activations(_pixels(4))
        again = batcher.activations(np.concatenate([_pixels(4)[::-1], _pixels(4)[:1]]))
        assert forward.sizes == [4]  # nothing new: no second pass
        np.testing.assert_array_equal(again[:4], first[::-1])
        np.testing.assert_array_equal(again[4], first[0])
        assert batcher.memo_hits == 5
        twice = batcher.activations(np.concatenate([_pixels(2, start=100)] * 2))
        assert forward.sizes == [4, 2]  # a repeat within one request passes once
        np.testing.assert_array_equal(twice[:2], twice[2:])
        batcher.activations(_pixels(8, start=200))  # the memo holds 8: the first 4 are evicted
        batcher.activations(_pixels(1))
        assert forward.sizes == [4, 2, 8, 1]
        batcher.clear_memo()
        batcher.activations(_pixels(1, start=200))
        assert forward.sizes == [4, 2, 8, 1, 1]


def test_without_a_memo_every_request_passes():
    forward = _Recorder()
    with MeasureBatcher(forward, max_images=64, window_s=0.0, memo_images=0) as batcher:
        batcher.activations(_pixels(3))
        batcher.activations(_pixels(3))
    assert forward.sizes == [3, 3] and batcher.memo_hits == 0


def test_a_request_larger_than_a_batch_is_split_and_comes_back_in_order():
    forward = _Recorder()
    with MeasureBatcher(forward, max_images=64, window_s=0.0) as batcher:
        values = batcher.activations(_pixels(150))
    np.testing.assert_array_equal(values[:, 0], np.arange(150, dtype=np.float32))
    assert sorted(forward.sizes) == [22, 64, 64]


def test_a_failed_pass_fails_each_waiting_request_and_the_next_pass_runs():
    calls = []

    def forward(pixels: np.ndarray) -> np.ndarray:
        calls.append(len(pixels))
        if len(calls) == 1:
            raise RuntimeError("replica lost 8 times")
        return np.zeros((len(pixels), 3), dtype=np.float32)

    with MeasureBatcher(forward, window_s=0.0) as batcher:
        with pytest.raises(RuntimeError, match="replica lost 8 times"):
            batcher.activations(_pixels(5))
        assert batcher.activations(_pixels(4)).shape == (4, 3)


def test_a_forward_of_the_wrong_shape_is_an_error_not_a_hang():
    wrong = MeasureBatcher(lambda p: np.zeros((1, 2), np.float32), window_s=0.0)
    with wrong as batcher, pytest.raises(RuntimeError, match="shape"):
        batcher.activations(_pixels(3))


def test_closed_batcher_refuses_and_bad_settings_are_errors():
    batcher = MeasureBatcher(_Recorder(), window_s=0.0)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.activations(_pixels(1))
    with pytest.raises(ValueError, match="max_images"):
        MeasureBatcher(_Recorder(), max_images=0)


def _probe_payload() -> tuple[ModelPayload, torch.nn.Module]:
    torch.manual_seed(0)
    module = probe_cnn().eval()
    payload = ModelPayload(
        model_id="probe_cnn", arch="probe_cnn", arch_kwargs={}, weights_id="none-seed0",
        random_weights=True, preprocess=PREPROCESS, class_names=(),
        state_dict={k: v.clone() for k, v in module.state_dict().items()},
    )  # fmt: skip
    return payload, module


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_the_batched_meter_reads_what_the_driver_side_meter_reads(reduction):
    payload, module = _probe_payload()
    layer = last_block(module, describe_layers(module, "probe_cnn", 32))
    core = ReplicaCore(payload, {layer.name: layer.layout}, (reduction,), device="cpu")

    def forward(pixels: np.ndarray) -> np.ndarray:
        return core.run_pixels(0, pixels).activations[layer.name][reduction]

    images = _images(7)
    with MeasureBatcher(forward, window_s=0.0) as batcher:
        for unit in (0, 5):
            got = BatchedUnitMeter(batcher, PREPROCESS, unit).measure(images)
            want = TorchUnitMeter(module, PREPROCESS, layer.name, layer.layout, unit, reduction).measure(images)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert BatchedUnitMeter(batcher, PREPROCESS, 0).measure([]) == []
        with pytest.raises(RuntimeError, match="no unit 999"):
            BatchedUnitMeter(batcher, PREPROCESS, 999).measure(images[:1])


def test_run_pixels_refuses_images_of_another_size():
    payload, module = _probe_payload()
    layer = last_block(module, describe_layers(module, "probe_cnn", 32))
    core = ReplicaCore(payload, {layer.name: layer.layout}, ("max",), device="cpu")
    with pytest.raises(ValueError, match=r"expected uint8 \(batch, 3, 32, 32\)"):
        core.run_pixels(0, np.zeros((2, 3, 16, 16), np.uint8))


def test_agents_measure_on_the_replicas_through_one_batcher(ray_cluster):
    """The sweep's `agent_replicas`: replicas on Ray, many threads at once, the SAE's features too;
    every pass is counted on the replicas and none in the driver."""
    from coin_scale.models.sae import SparseAutoencoder
    from coin_scale.models.sae_config import SAEConfig
    from coin_scale.sweep.agents import agent_replicas

    payload, module = _probe_payload()
    layer = last_block(module, describe_layers(module, "probe_cnn", 32))
    images = _images(6)
    before = FORWARDS.snapshot()
    with agent_replicas(payload, layer) as replicas:
        batcher = replicas.batcher
        got: dict[int, list[float]] = {}
        threads = [
            threading.Thread(target=lambda u=u: got.__setitem__(u, BatchedUnitMeter(batcher, PREPROCESS, u).measure(images)))
            for u in range(8)
        ]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    used = FORWARDS.snapshot().minus(before).to_dict()
    for unit in range(8):
        want = TorchUnitMeter(module, PREPROCESS, layer.name, layer.layout, unit).measure(images)
        np.testing.assert_allclose(got[unit], want, rtol=1e-5, atol=1e-6)
    assert used["driver"]["passes"] == 0
    # 8 units x the same 6 images: each image passes once, the other 42 reads come from the memo
    assert used["replicas"]["images"] == 6 and used["replicas"]["passes"] < 8
    assert batcher.memo_hits == 42

    torch.manual_seed(1)
    config = SAEConfig(model="probe_cnn", layer=layer.name, d_in=layer.units, expansion=2, k=4)
    sae = SparseAutoencoder(config.d_in, config.d_sae, config.k, config.kind).eval()
    units = SAEUnits(config=config, state={k: v.clone() for k, v in sae.state_dict().items()}, sha256="x")
    with agent_replicas(payload, layer, units) as replicas:
        features = replicas.meter(3).measure(images)
    from coin_scale.models.activations import sae_code_maps

    want = TorchUnitMeter(
        module, PREPROCESS, layer.name, layer.layout, 3, transform=sae_code_maps(units.build())
    ).measure(images)
    np.testing.assert_allclose(features, want, rtol=1e-4, atol=1e-5)


def test_agents_visualize_on_a_replica_as_in_process(ray_cluster):
    """`visualize(n)` runs on a replica from a picklable spec: the same images as the driver-side
    visualizer's (the same seed and optimisation), counted as the replica's passes."""
    from coin_scale.agent.visualizer import TorchUnitVisualizer
    from coin_scale.sweep.agents import agent_replicas

    payload, module = _probe_payload()
    layer = last_block(module, describe_layers(module, "probe_cnn", 32))
    before = FORWARDS.snapshot()
    with agent_replicas(payload, layer) as replicas:
        visualizer = replicas.visualizer(4)
        visualizer.spec = replace(visualizer.spec, steps=6)
        got = visualizer.visualize(2, seed=3)
        with pytest.raises(ValueError, match="n: expected 1 to 4"):
            visualizer.visualize(9, seed=0)
    used = FORWARDS.snapshot().minus(before).to_dict()
    assert used["replicas"] == {"passes": 7, "images": 14} and used["driver"]["passes"] == 0
    local = TorchUnitVisualizer(module, PREPROCESS, layer.name, layer.layout, 4, steps=6)
    want = local.visualize(2, seed=3)
    assert [im.size for im in got] == [im.size for im in want] == [(32, 32)] * 2
    diff = np.abs(np.asarray(got[0], float) - np.asarray(want[0], float)).mean()
    assert diff < 2.0  # 8-bit images of the same optimisation (thread counts may differ)
