"""The verification rule itself, on numbers (the backends' own checks are in test_convert_*)."""

import numpy as np

from xception_edge.verify import compare


def test_top1_agreement_and_ties_within_one_output_step():
    ref = np.array([[0.7, 0.2, 0.1], [0.40, 0.39, 0.21], [0.1, 0.1, 0.8]])
    cand = np.array([[0.7, 0.2, 0.1], [0.39, 0.40, 0.21], [0.8, 0.1, 0.1]])
    strict = compare(ref, cand, 0.9, "x")
    assert strict.strict_agreement == strict.agreement == 1 / 3 and not strict.passed
    tied = compare(ref, cand, 0.6, "x", tie_tolerance=0.02)  # row 2 flipped within one int8 step
    assert tied.agreement == 2 / 3 and tied.strict_agreement == 1 / 3 and tied.passed
    tied = compare(ref[:2], cand[:2], 0.99, "x", tie_tolerance=0.02)
    assert tied.agreement == 1.0 and tied.strict_agreement == 0.5 and tied.passed
    assert abs(strict.max_abs_diff - 0.7) < 1e-9


def test_undecided_source_is_gated_on_probabilities():
    rng = np.random.default_rng(0)
    ref = np.full((20, 1000), 1e-3) + rng.normal(0, 1e-6, (20, 1000))
    noisy = ref + rng.normal(0, 1e-5, ref.shape)  # top-1 flips, probabilities barely move
    r = compare(ref, noisy, 0.9, "x")
    assert r.mode == "distribution" and r.strict_agreement < 0.5 and r.passed
    collapsed = np.zeros_like(ref)
    collapsed[:, 0] = 1.0
    r = compare(ref, collapsed, 0.9, "x")
    assert r.mode == "distribution" and not r.passed
