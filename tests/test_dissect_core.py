"""The pure core of dissection: top-k merging, moments, the upper quantile, spatial reduction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coin_scale.dissect.statistics import RunningMoments, RunningUpperQuantile, UnitAccumulator
from coin_scale.dissect.topk import RunningTopK
from coin_scale.models.activations import reduce_units


def _batches(n_images: int, n_units: int, batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(n_images, n_units, generator=gen)
    for start in range(0, n_images, batch):
        yield values[start : start + batch], torch.arange(start, min(start + batch, n_images))


def test_topk_over_many_batches_equals_a_full_sort():
    all_values = torch.cat([v for v, _ in _batches(1000, 37, 23)])
    top = RunningTopK(37, k=10)
    for values, indices in _batches(1000, 37, 23):
        top.update(values, indices)
    got_values, got_indices = top.result()
    want_values, want_indices = torch.sort(all_values.T, dim=1, descending=True)
    torch.testing.assert_close(got_values, want_values[:, :10])
    assert torch.equal(got_indices, want_indices[:, :10])


def test_topk_is_independent_of_batch_order_even_with_ties():
    values = torch.zeros(40, 3)  # dead units: every image ties at 0
    values[5, 1] = 2.0
    forward, backward = RunningTopK(3, k=4), RunningTopK(3, k=4)
    for start in range(0, 40, 7):
        forward.update(values[start : start + 7], torch.arange(start, min(start + 7, 40)))
    for start in reversed(range(0, 40, 7)):
        backward.update(values[start : start + 7], torch.arange(start, min(start + 7, 40)))
    assert torch.equal(forward.result()[1], backward.result()[1])
    assert forward.result()[1][0].tolist() == [0, 1, 2, 3]  # ties -> smallest image index
    assert forward.result()[1][1, 0].item() == 5


def test_topk_with_fewer_images_than_k_keeps_what_it_saw():
    top = RunningTopK(2, k=8)
    top.update(torch.tensor([[1.0, 2.0], [3.0, 0.5]]), torch.tensor([0, 1]))
    values, indices = top.result()
    assert values.shape == (2, 2)
    assert indices.tolist() == [[1, 0], [0, 1]]


def test_moments_match_numpy_in_float64():
    moments = RunningMoments(37)
    for values, _ in _batches(1000, 37, 64):
        moments.update(values)
    full = torch.cat([v for v, _ in _batches(1000, 37, 64)]).double().numpy()
    np.testing.assert_allclose(moments.mean.numpy(), full.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(moments.std().numpy(), full.std(0), rtol=1e-10)
    np.testing.assert_allclose(moments.max.numpy(), full.max(0))
    np.testing.assert_allclose(moments.min.numpy(), full.min(0))


@pytest.mark.parametrize("n_images", [1, 2, 99, 1000, 1234])
@pytest.mark.parametrize("q", [0.5, 0.99])
def test_upper_quantile_is_exactly_numpys(n_images, q):
    upper = RunningUpperQuantile(5, q, n_images)
    for values, indices in _batches(n_images, 5, 64):
        upper.update(values, indices)
    full = torch.cat([v for v, _ in _batches(n_images, 5, 64)]).double().numpy()
    assert upper.method == "exact"
    np.testing.assert_allclose(upper.result().numpy(), np.quantile(full, q, axis=0), rtol=1e-6)


def test_upper_quantile_samples_when_the_tail_would_not_fit():
    n = 20000
    upper = RunningUpperQuantile(4, 0.9, n, max_values=256)
    for values, indices in _batches(n, 4, 500):
        upper.update(values, indices)
    assert upper.method == "sampled"
    assert upper._top.values.shape[1] <= 256  # memory stays bounded
    full = torch.cat([v for v, _ in _batches(n, 4, 500)]).numpy()
    np.testing.assert_allclose(upper.result().numpy(), np.quantile(full, 0.9, axis=0), atol=0.1)


def test_accumulator_statistics_bundle():
    acc = UnitAccumulator(3, top_k=2, quantile=0.5, n_images=10)
    acc.update(torch.arange(30, dtype=torch.float32).view(10, 3), torch.arange(10))
    stats = acc.statistics()
    assert stats.count == 10
    assert stats.threshold.tolist() == [13.5, 14.5, 15.5]
    assert acc.topk.result()[1].tolist() == [[9, 8], [9, 8], [9, 8]]


@pytest.mark.parametrize(
    ("layout", "shape", "dims"),
    [("nchw", (2, 5, 3, 4), (2, 3)), ("nhwc", (2, 3, 4, 5), (1, 2)), ("ntc", (2, 7, 5), (1,))],
)
def test_reduce_units_max_and_mean(layout, shape, dims):
    x = torch.randn(shape)
    torch.testing.assert_close(reduce_units(x, layout, "max"), x.amax(dim=dims))
    torch.testing.assert_close(reduce_units(x, layout, "mean"), x.mean(dim=dims))
    assert reduce_units(x, layout, "max").shape == (2, 5)
