"""training/hidden_novelty.py: a clip's signature from its speech windows, and a gate on one scale per fold."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import hidden_novelty  # noqa: E402


def test_clip_means_average_the_speech_windows_of_each_clip_only():
    h = np.array([[1.0, 0.0], [3.0, 2.0], [100.0, 100.0], [5.0, 5.0], [7.0, 9.0]])
    owner = np.array([0, 0, 0, 2, 3])
    speech = np.array([True, True, False, False, True])
    out = hidden_novelty.clip_means(h, owner, speech, 4)
    assert out[0] == pytest.approx([2.0, 1.0])          # the silent window (100, 100) left out
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()   # no window; only a silent one
    assert out[3] == pytest.approx([7.0, 9.0])


def test_normalised_gate_puts_the_training_clips_median_at_one_and_strangers_far():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 6))
    gate, unit = hidden_novelty.normalised_gate(train)
    assert np.median(gate.novelty(train) / unit) == pytest.approx(1.0)
    # the same cloud scaled by 10 and by 0.1 gives the same normalised figures: the unit follows the scale
    gate10, unit10 = hidden_novelty.normalised_gate(train * 10)
    probe = rng.normal(size=(50, 6))
    assert gate10.novelty(probe * 10) / unit10 == pytest.approx(gate.novelty(probe) / unit, rel=1e-6)
    far = rng.normal(loc=4.0, size=(50, 6))
    assert np.median(gate.novelty(far) / unit) > 3
