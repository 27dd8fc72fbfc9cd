"""Session 40's routed adapted mode (training/route_probe.py, docs/preregistration-session40.md): the novelty of a
reference and the threshold chosen inside the training data. WU2A-R and WU2A-RS failed their rule; these keep the
arithmetic their committed figures came from honest."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def rp():
    from conftest import training_module

    return training_module("route_probe")


def test_the_threshold_sits_between_apart_values_and_at_the_best_split_otherwise(rp):
    assert rp.choose_threshold(np.array([0.1, 0.2]), np.array([0.8, 0.5])) == pytest.approx(np.sqrt(0.2 * 0.5))
    # overlapping: 0.3 (familiar) above 0.25 (new); the best split keeps both other familiar and new values apart
    tau = rp.choose_threshold(np.array([0.1, 0.2, 0.3]), np.array([0.25, 0.6, 0.7]))
    assert 0.3 < tau < 0.6
    familiar, new = np.array([0.1, 0.2, 0.3]), np.array([0.25, 0.6, 0.7])
    assert ((familiar <= tau).mean() + (new > tau).mean()) / 2 == pytest.approx((1 + 2 / 3) / 2)


def test_a_reference_of_a_known_corpus_is_near_and_a_moved_one_far_in_either_scale(rp):
    rng = np.random.default_rng(0)
    corpus = np.repeat(["a", "b"], 200)
    speaker = np.array([f"{c}{i % 10}" for i, c in enumerate(corpus)])
    voice = {s: rng.normal(0, 0.5, 8) for s in set(speaker)}
    x = np.where(corpus[:, None] == "a", 0.0, 3.0) + np.stack([voice[s] for s in speaker]) + rng.normal(0, 1, (400, 8))
    for by in (None, speaker):
        profile = rp.setup_profile(x, corpus, by)
        assert list(profile["corpora"]) == ["a", "b"]
        assert profile["means"][1] == pytest.approx(x[200:].mean(axis=0))
        known = rp.novelty(x[:20], profile)
        moved = rp.novelty(x[:20] + 2.0, profile)
        assert known < moved
    # the speakers' spread is narrower than the clips': the same distance counts for more
    assert (rp.setup_profile(x, corpus, speaker)["scale"] < rp.setup_profile(x, corpus)["scale"]).all()
