"""runtime/sampling.py: logits -> distribution (temperature, top-k, top-p) and drawing from it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gemma_edge.runtime.sampling import SamplingConfig, probabilities, sample

# A distribution with well separated masses, given as logits in a shuffled order so that
# sorting bugs (keeping the wrong tokens) show up. Sorted masses: .40 .25 .15 .10 .06 .04.
MASSES = np.array([0.10, 0.40, 0.04, 0.25, 0.06, 0.15])
LOGITS = np.log(MASSES)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# --- probabilities -------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_greedy_is_one_hot_at_the_argmax(temperature: float) -> None:
    config = SamplingConfig(temperature=temperature, top_k=2, top_p=0.5)  # cuts are irrelevant when greedy
    assert config.greedy
    probs = probabilities(LOGITS, config)
    expected = np.zeros(len(LOGITS))
    expected[1] = 1.0
    np.testing.assert_array_equal(probs, expected)


def test_greedy_on_a_batch_is_one_hot_per_row() -> None:
    logits = np.array([[0.0, 3.0, 1.0], [5.0, -1.0, 4.0], [-2.0, -3.0, -1.0]], dtype=np.float32)
    probs = probabilities(logits, SamplingConfig())
    np.testing.assert_array_equal(probs, np.eye(3)[[1, 0, 2]])


def test_temperature_one_is_the_softmax() -> None:
    probs = probabilities(LOGITS, SamplingConfig(temperature=1.0))
    assert probs.dtype == np.float64
    np.testing.assert_allclose(probs, MASSES, rtol=1e-12)


@pytest.mark.parametrize("temperature", [0.25, 0.7, 2.0, 10.0])
def test_temperature_divides_the_logits(temperature: float) -> None:
    logits = np.array([1.5, -0.3, 0.0, 2.2, -4.0])
    probs = probabilities(logits, SamplingConfig(temperature=temperature))
    np.testing.assert_allclose(probs, softmax(logits / temperature), rtol=1e-12)
    # log-odds between any two tokens scale by 1 / temperature
    np.testing.assert_allclose(np.log(probs[3] / probs[1]), (2.2 - -0.3) / temperature, rtol=1e-9)


def test_higher_temperature_flattens_the_distribution() -> None:
    cold = probabilities(LOGITS, SamplingConfig(temperature=0.5))
    hot = probabilities(LOGITS, SamplingConfig(temperature=3.0))
    assert cold.max() > MASSES.max() > hot.max()
    assert cold.argmax() == hot.argmax() == 1


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_keeps_exactly_the_k_most_likely_tokens(k: int) -> None:
    probs = probabilities(LOGITS, SamplingConfig(temperature=1.0, top_k=k))
    kept = np.flatnonzero(probs)
    assert len(kept) == k
    assert set(kept) == set(np.argsort(-MASSES)[:k])
    # the survivors keep their relative masses
    np.testing.assert_allclose(probs[kept], MASSES[kept] / MASSES[kept].sum(), rtol=1e-12)


@pytest.mark.parametrize("k", [0, 6, 100])
def test_top_k_zero_or_at_least_the_vocabulary_keeps_everything(k: int) -> None:
    probs = probabilities(LOGITS, SamplingConfig(temperature=1.0, top_k=k))
    np.testing.assert_allclose(probs, MASSES, rtol=1e-12)


@pytest.mark.parametrize(
    ("top_p", "kept_masses"),
    [
        (0.30, [0.40]),  # the first token already crosses p: it alone is kept
        (0.50, [0.40, 0.25]),  # .40 < .50 <= .65: the crossing token (.25) is kept
        (0.66, [0.40, 0.25, 0.15]),
        (0.85, [0.40, 0.25, 0.15, 0.10]),
        (0.99, [0.40, 0.25, 0.15, 0.10, 0.06, 0.04]),
    ],
)
def test_top_p_keeps_the_smallest_prefix_reaching_p(top_p: float, kept_masses: list[float]) -> None:
    probs = probabilities(LOGITS, SamplingConfig(temperature=1.0, top_p=top_p))
    kept = np.flatnonzero(probs)
    np.testing.assert_allclose(np.sort(MASSES[kept])[::-1], kept_masses)
    np.testing.assert_allclose(probs[kept], MASSES[kept] / sum(kept_masses), rtol=1e-12)


def test_top_k_is_applied_before_top_p() -> None:
    # After top-k=2 the masses are .40/.65 = .615 and .25/.65 = .385: p=.55 keeps only the first;
    # applied the other way round, p=.55 would have kept two tokens.
    probs = probabilities(LOGITS, SamplingConfig(temperature=1.0, top_k=2, top_p=0.55))
    np.testing.assert_array_equal(np.flatnonzero(probs), [1])
    assert probs[1] == pytest.approx(1.0)


def test_cuts_work_row_by_row_on_a_batch() -> None:
    """[K, V] rows with different shapes of distribution keep different numbers of tokens."""
    logits = np.stack(
        [
            LOGITS,
            np.log([0.9, 0.02, 0.02, 0.02, 0.02, 0.02]),  # peaked: top-p .75 keeps one token
            np.zeros(6),  # flat: top-p .75 keeps five of six (ties broken arbitrarily)
        ]
    ).astype(np.float32)
    probs = probabilities(logits, SamplingConfig(temperature=1.0, top_p=0.75))
    assert probs.shape == (3, 6)
    assert [np.count_nonzero(row) for row in probs] == [3, 1, 5]
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-12)
    # and the batch result equals the row-by-row result
    for row_logits, row_probs in zip(logits, probs):
        np.testing.assert_array_equal(probabilities(row_logits, SamplingConfig(temperature=1.0, top_p=0.75)), row_probs)

    distinct = np.stack([LOGITS, -LOGITS])  # reversed order: a different top-3 per row
    top_k = probabilities(distinct, SamplingConfig(temperature=0.8, top_k=3))
    assert [set(np.flatnonzero(row)) for row in top_k] == [{1, 3, 5}, {2, 4, 0}]


@settings(max_examples=60, deadline=None)
@given(
    logits=arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(2, 40)),
        elements=st.floats(-30, 30, width=32),
        unique=True,  # no ties, so "exactly k" is well defined
    ),
    temperature=st.floats(0.05, 5.0),
    top_k=st.integers(0, 50),
    top_p=st.floats(0.01, 1.0),
)
def test_rows_are_distributions_within_the_cuts(
    logits: np.ndarray, temperature: float, top_k: int, top_p: float
) -> None:
    probs = probabilities(logits, SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p))
    assert probs.shape == logits.shape
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-9)
    vocab = logits.shape[-1]
    limit = top_k if 0 < top_k < vocab else vocab
    for row_logits, row_probs in zip(logits, probs):
        kept = np.flatnonzero(row_probs)
        assert 1 <= len(kept) <= limit
        assert row_logits.argmax() in kept  # the most likely token always survives
        # whatever is kept is a top slice of the logits
        assert row_logits[kept].min() >= np.delete(row_logits, kept).max(initial=-np.inf)


# --- sample --------------------------------------------------------------------------------


def test_sample_of_a_one_hot_always_returns_its_index() -> None:
    rng = np.random.default_rng(0)
    for index in [0, 3, 9]:
        one_hot = np.zeros(10)
        one_hot[index] = 1.0
        assert {sample(one_hot, rng) for _ in range(500)} == {index}


def test_sample_follows_the_probabilities() -> None:
    probs = np.array([0.05, 0.30, 0.0, 0.15, 0.40, 0.10])
    rng = np.random.default_rng(1234)
    draws = 20_000
    counts = np.bincount([sample(probs, rng) for _ in range(draws)], minlength=len(probs))
    assert counts[2] == 0  # a zero-probability token is never drawn
    np.testing.assert_allclose(counts / draws, probs, atol=0.01)
    # chi-square over the 5 possible tokens (4 degrees of freedom): 18.47 is the 0.999 quantile
    possible = probs > 0
    expected = probs[possible] * draws
    statistic = float((((counts[possible] - expected) ** 2) / expected).sum())
    assert statistic < 18.47, statistic


def test_sample_never_draws_a_token_cut_by_top_k_or_top_p() -> None:
    rng = np.random.default_rng(7)
    probs = probabilities(LOGITS, SamplingConfig(temperature=1.5, top_k=3, top_p=0.9))
    allowed = set(np.flatnonzero(probs))
    assert {sample(probs, rng) for _ in range(2000)} == allowed


def test_sample_is_reproducible_with_a_seed() -> None:
    rng_a, rng_b = np.random.default_rng(99), np.random.default_rng(99)
    draws_a = [sample(MASSES, rng_a) for _ in range(50)]
    assert draws_a == [sample(MASSES, rng_b) for _ in range(50)]
    assert len(set(draws_a)) > 1  # and it does vary from draw to draw


def test_sampling_config_refuses_empty_nucleus_and_negative_top_k() -> None:
    from gemma_edge.artifact.errors import GemmaEdgeError

    with pytest.raises(GemmaEdgeError, match="top_p"):
        SamplingConfig(temperature=1.0, top_p=0.0)
    with pytest.raises(GemmaEdgeError, match="top_k"):
        SamplingConfig(temperature=1.0, top_k=-1)
