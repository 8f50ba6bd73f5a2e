"""SAE metrics and training on synthetic tokens with a known sparse structure (CPU, seconds)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from coin_scale.sae import (
    DeadLatents,
    ReconstructionMetrics,
    SAEConfig,
    evaluate_sae,
    load_sae,
    replacement_agreement,
    save_sae,
    train_sae,
)

D_IN, FEATURES, ACTIVE = 64, 128, 4


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices run faster on one thread, and much faster when another suite shares the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sparse_tokens(batches: int, batch_tokens: int = 512, seed: int = 1) -> Iterator[torch.Tensor]:
    """Tokens = (nonnegative 4-sparse combination of 128 fixed unit directions + offset + a little
    noise), times 3: an SAE with enough latents can explain nearly all of their variance."""
    fixed = torch.Generator().manual_seed(0)
    dictionary = torch.randn(FEATURES, D_IN, generator=fixed)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    offset = torch.randn(D_IN, generator=fixed) * 0.5
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        active = torch.rand(batch_tokens, FEATURES, generator=gen).argsort(dim=1)[:, :ACTIVE]
        coef = torch.rand(batch_tokens, ACTIVE, generator=gen) + 0.5
        codes = torch.zeros(batch_tokens, FEATURES).scatter(1, active, coef)
        noise = 0.01 * torch.randn(batch_tokens, D_IN, generator=gen)
        yield 3.0 * (codes @ dictionary + offset + noise)


def sae_config(**overrides) -> SAEConfig:
    base = dict(
        model="synthetic",
        layer="layer3",
        d_in=D_IN,
        expansion=4,
        k=ACTIVE,
        lr=3e-3,
        batch_tokens=512,
        steps=300,
        log_every=50,
        dead_after_tokens=512 * 20,
    )
    return SAEConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def topk_run():
    """One TopK run shared by several tests (module fixtures set up before `one_thread`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records: list[dict] = []
        result = train_sae(
            sae_config(), sparse_tokens(300), progress=False, on_metrics=records.append
        )
    finally:
        torch.set_num_threads(before)
    return result, records


# -- metrics ------------------------------------------------------------------------------


def test_fvu_and_l0_match_a_direct_float64_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(1000, 8)).astype(np.float32)
    x_hat = (x + rng.normal(0, 0.5, size=x.shape)).astype(np.float32)
    codes = (rng.random((1000, 20)) < 0.2).astype(np.float32)
    metrics = ReconstructionMetrics(8)
    for start, stop in [(0, 1), (1, 300), (300, 301), (301, 1000)]:
        metrics.update(*(torch.from_numpy(a[start:stop]) for a in (x, x_hat, codes)))
    x64 = x.astype(np.float64)
    expected = ((x64 - x_hat) ** 2).sum() / ((x64 - x64.mean(axis=0)) ** 2).sum()
    assert metrics.fvu() == pytest.approx(expected, rel=1e-12)
    assert metrics.l0() == pytest.approx(codes.sum() / 1000, rel=1e-12)
    assert np.isnan(ReconstructionMetrics(8).fvu())


def test_dead_latents_on_a_hand_made_case():
    dead = DeadLatents(4, dead_after_tokens=6)
    dead.update(torch.tensor([[1.0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]]))
    assert dead.fraction() is None  # 3 tokens seen: not a full window yet
    assert dead.tokens_since_fired.tolist() == [0, 0, 3, 3]
    dead.update(torch.tensor([[0.5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    assert dead.tokens_since_fired.tolist() == [0, 3, 6, 6]
    assert dead.mask().tolist() == [False, False, True, True]
    assert dead.fraction() == 0.5
    dead.update(torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    assert dead.mask().tolist() == [False, True, False, True]
    assert dead.fraction() == 0.5


def test_replacement_agreement():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert replacement_agreement(logits, logits.clone()) == (1.0, 0.0)
    other = torch.tensor([[0.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    agree, kl = replacement_agreement(logits, other)
    p, q = torch.softmax(logits[0].double(), 0), torch.softmax(other[0].double(), 0)
    assert agree == 0.5
    assert kl == pytest.approx(float((p * (p / q).log()).sum()) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="logit matrices of one shape"):
        replacement_agreement(logits, logits[:1])


# -- training -----------------------------------------------------------------------------


def test_topk_sae_recovers_the_sparse_structure(topk_run):
    result, records = topk_run
    final = result.final_metrics
    assert final["fvu"] < 0.15
    assert final["l0"] == ACTIVE
    assert final["steps_done"] == 300 and final["tokens"] == 300 * 512
    assert [r["step"] for r in result.metrics_history] == [50, 100, 150, 200, 250, 300]
    assert records == result.metrics_history
    fvus = [r["fvu"] for r in result.metrics_history]
    assert fvus[-1] < fvus[0]
    assert evaluate_sae(result.sae, sparse_tokens(4, seed=9))["fvu"] < 0.15
    norms = result.sae.w_dec.detach().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_dead_latents_and_the_aux_loss_are_reported(topk_run):
    history = topk_run[0].metrics_history
    # 256 latents for 128 true directions: many latents are never needed.
    final = history[-1]
    assert 0 < final["dead_fraction"] < 1
    assert final["aux_loss"] > 0
    assert all(0 <= r["dead_fraction"] <= 1 for r in history)
    assert history[0]["aux_loss"] == 0 or history[0]["dead_fraction"] > 0


def test_dead_fraction_is_none_before_a_full_window():
    result = train_sae(
        sae_config(steps=4, log_every=2, dead_after_tokens=512 * 10),
        sparse_tokens(4),
        progress=False,
    )
    assert [r["dead_fraction"] for r in result.metrics_history] == [None, None]


def test_batchtopk_keeps_k_on_average_and_its_threshold_too():
    config = sae_config(kind="batchtopk")
    result = train_sae(config, sparse_tokens(300), progress=False)
    assert result.final_metrics["l0"] == pytest.approx(ACTIVE, abs=0.05)
    assert result.final_metrics["fvu"] < 0.15
    evaluation = evaluate_sae(result.sae, sparse_tokens(4, seed=9))
    assert 0.75 * ACTIVE < evaluation["l0"] < 1.25 * ACTIVE
    assert evaluation["fvu"] < 0.2
    assert float(result.sae.threshold) > 0


def test_save_and_load_keep_the_reconstruction_of_raw_inputs(topk_run, tmp_path):
    result = topk_run[0]
    assert float(result.sae.input_scale) != 1.0
    path = tmp_path / "sae.safetensors"
    save_sae(path, result.sae, sae_config(), result.final_metrics)
    loaded, config, metrics = load_sae(path, expect_layer="layer3", expect_d_in=D_IN)
    x = next(sparse_tokens(1, batch_tokens=256, seed=5))
    torch.testing.assert_close(loaded(x), result.sae(x), rtol=1e-5, atol=1e-4)
    assert metrics == result.final_metrics and config == sae_config()


def test_training_is_deterministic_on_cpu_for_a_seed():
    def weights(seed: int) -> torch.Tensor:
        result = train_sae(sae_config(steps=15, seed=seed), sparse_tokens(15), progress=False)
        return torch.cat([p.detach().flatten() for p in result.sae.parameters()])

    first = weights(0)
    assert torch.equal(first, weights(0))
    assert not torch.equal(first, weights(1))


def test_a_short_stream_stops_early_and_a_bad_one_is_refused():
    result = train_sae(sae_config(steps=100), sparse_tokens(7), progress=False)
    assert result.final_metrics["steps_done"] == 7
    assert result.metrics_history[-1]["step"] == 7
    with pytest.raises(ValueError, match="the activation stream is empty"):
        train_sae(sae_config(), iter([]), progress=False)
    with pytest.raises(ValueError, match=r"expected token batches \(token, 64\)"):
        train_sae(sae_config(), [torch.zeros(8, 32)], progress=False)


def test_mean_and_scale_from_the_cache_are_used():
    mean = torch.full((D_IN,), 0.25, dtype=torch.float64)
    result = train_sae(
        sae_config(steps=1), sparse_tokens(1), mean=mean, input_scale=0.5, progress=False
    )
    assert float(result.sae.input_scale) == 0.5
    assert result.final_metrics["input_scale"] == 0.5
    # b_dec starts at the mean (in normalised units) and moves by about lr in one Adam step.
    torch.testing.assert_close(
        result.sae.b_dec.detach(), torch.full((D_IN,), 0.125), atol=5e-3, rtol=0
    )
