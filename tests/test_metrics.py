"""The shared error metrics and float references."""
import numpy as np
import pytest

import intsoftmax as ism


def test_sqnr_db():
    ref = np.ones(100)
    assert ism.sqnr_db(ref, ref) == float("inf")
    assert ism.sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)
    assert ism.sqnr_db(np.zeros(3), np.ones(3)) == float("-inf")
    with pytest.raises(ValueError, match="shapes differ"):
        ism.sqnr_db(np.ones(3), np.ones(4))


def test_errors_and_kl():
    ref, test = np.array([1.0, -2.0, 0.5]), np.array([1.1, -2.0, 0.25])
    assert ism.max_abs_error(ref, test) == pytest.approx(0.25)
    assert ism.max_rel_error(ref, test) == pytest.approx(0.5)
    p = ism.float_softmax(np.array([[1.0, 2.0, 3.0]]))
    assert ism.softmax_kl(p, p)[0] == pytest.approx(0.0, abs=1e-12)
    assert ism.softmax_kl(p, np.array([[1.0, 1.0, 1.0]]))[0] > 0


def test_float_references_define_fully_masked_rows():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    mask = np.array([[False, False], [True, False]])
    p = ism.float_softmax(x, mask=mask)
    assert p.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    q = np.ones((2, 4))
    out = ism.float_attention(q, q, np.arange(8.0).reshape(2, 4), attn_mask=mask)
    assert (out[0] == 0).all() and np.allclose(out[1], [0, 1, 2, 3])
