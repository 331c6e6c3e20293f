"""intsoftmax.select: the cheapest catalog recipe meeting an SQNR target, measured by the golden model."""
import math

import numpy as np
import pytest

import intsoftmax as ism
from intsoftmax.select import Candidate, catalog, choose, evaluate, pareto_front
from intsoftmax.workloads import qkv


@pytest.fixture(scope="module")
def a2_uniform():
    return evaluate(None, "A2", "uniform", 0)


def direct_sqnr(recipe, workload="A2", distribution="uniform", seed=0):
    q, k, v = qkv(workload, distribution, seed=seed)
    return ism.sqnr_db(ism.float_attention(q, k, v), recipe.attention(q, k, v))


def test_catalog_is_small_integer_only_and_distinct():
    cat = catalog()
    assert len(cat) == 100
    assert len(set(cat.values())) == len(cat)  # no recipe twice under two labels
    assert all(r.in_kernel for r in cat.values())  # integer-only: the kernel compiles every one
    assert {ism.Recipe.per_tensor(), ism.Recipe.fast(), ism.Recipe.qflash()} <= set(cat.values())


def test_select_returns_the_cheapest_recipe_that_meets_the_target(a2_uniform):
    target = 35.0
    s = ism.select(target_sqnr_db=target, workload="A2", distribution="uniform")
    # its SQNR is what the golden model gives on that data, and it meets the target
    assert s.sqnr_db == pytest.approx(direct_sqnr(s.recipe), abs=1e-12)
    assert s.sqnr_db >= target
    assert s.ops_per_element == s.recipe.op_count().total
    # nothing strictly cheaper in ops meets it, and within its ops no fewer P bits do either
    for c in a2_uniform:
        if c.sqnr_db >= target:
            assert (c.ops, c.recipe.p_bits) >= (s.ops_per_element, s.recipe.p_bits), c.label
    assert s.label in s.explanation and "35 dB" in s.explanation and str(s) == s.explanation


def test_a_higher_target_never_gives_a_cheaper_recipe(a2_uniform):
    picks = [choose(a2_uniform, t, "A2", "uniform") for t in (25.0, 33.5, 35.0, 37.0)]
    keys = [(p.ops_per_element, p.recipe.p_bits) for p in picks]
    assert keys == sorted(keys)
    assert picks[0].ops_per_element < picks[-1].ops_per_element or picks[0].recipe.p_bits < picks[-1].recipe.p_bits


def test_unreachable_target_raises_naming_the_best_and_the_ceiling(a2_uniform):
    best = max(c.sqnr_db for c in a2_uniform)
    with pytest.raises(ValueError, match=r"target_sqnr_db=60: no recipe .* best is .* INT8 inputs alone allow"):
        choose(a2_uniform, 60.0, "A2", "uniform")
    with pytest.raises(ValueError, match=f"{best:.2f} dB"):
        choose(a2_uniform, best + 0.01, "A2", "uniform")


def test_custom_candidates_and_tie_breaks():
    two = {"qflash": ism.Recipe.qflash(), "default": ism.Recipe.per_tensor()}
    assert direct_sqnr(ism.Recipe.qflash()) < 35.0 < direct_sqnr(ism.Recipe.per_tensor())
    assert ism.select(35.0, candidates=two).label == "default"
    assert ism.select(30.0, candidates=two).label == "qflash"  # 16 ops against 19
    # same ops (both split P over two MMAs): fewer P bits wins; an iterable is labelled by recipe name
    p9, p11 = ism.Recipe(p_bits=9), ism.Recipe(p_bits=11)
    assert p9.op_count() == p11.op_count()
    assert ism.select(30.0, candidates=[p11, p9]).recipe == p9
    # two-pass costs one more row max per element than scale release
    two_pass, release = ism.Recipe(), ism.Recipe(accumulation=ism.ScaleRelease())
    assert two_pass.op_count().total == release.op_count().total + 1
    assert ism.select(30.0, candidates=[two_pass, release]).recipe == release


def test_select_is_deterministic():
    two = [ism.Recipe(exp=ism.PolyExp2(degree=2), p_bits=7), ism.Recipe(exp=ism.LutExp2(interpolate=False))]
    a, b = ism.select(30.0, "A5", "gaussian", candidates=two), ism.select(30.0, "A5", "gaussian", candidates=two)
    assert a == b


def test_amplitude_changes_the_answer_where_qflash_exp_breaks_down():
    two = {"qflash_exp2": ism.Recipe(exp=ism.QFlashExp2(), accumulation=ism.ScaleRelease()), "default": ism.Recipe.per_tensor()}
    assert ism.select(30.0, candidates=two).label == "qflash_exp2"  # U[-4, 4]: the cheap exp suffices
    small = ism.select(30.0, amplitude=0.25, candidates=two)  # docs/algorithms.md §9: it fails at small inputs
    assert small.label == "default" and "at amplitude 0.25" in small.explanation
    q, k, v = qkv("A2", "uniform", seed=0, amplitude=0.25)
    assert small.sqnr_db == ism.sqnr_db(ism.float_attention(q, k, v), ism.Recipe.per_tensor().attention(q, k, v))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(target_sqnr_db=True), TypeError, "must be a number of dB"),
    (dict(target_sqnr_db="30"), TypeError, "must be a number of dB"),
    (dict(target_sqnr_db=float("nan")), ValueError, "must be finite"),
    (dict(target_sqnr_db=30.0, workload="A9"), ValueError, r"workload='A9': unknown; choose one of \['A1'"),
    (dict(target_sqnr_db=30.0, distribution="cauchy"), ValueError, "distribution='cauchy': unknown"),
    (dict(target_sqnr_db=30.0, amplitude=0.0), ValueError, "amplitude=0.0: must be finite and positive"),
    (dict(target_sqnr_db=30.0, amplitude="4"), TypeError, "amplitude must be a positive number"),
    (dict(target_sqnr_db=30.0, candidates=ism.Recipe()), TypeError, "iterable of Recipes"),
    (dict(target_sqnr_db=30.0, candidates=[ism.PolyExp2()]), TypeError, "not an intsoftmax.Recipe"),
    (dict(target_sqnr_db=30.0, candidates={}), ValueError, "candidates is empty"),
])
def test_invalid_arguments_name_the_value_and_the_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        ism.select(**kwargs)


def test_recipes_that_cannot_run_the_workload_are_left_out():
    naive = ism.Recipe(accumulation=ism.NaiveScaleAccumulation(acc_bits=32))  # 64 keys at most
    assert naive.max_seq_len() < 197
    assert ism.select(20.0, "A4", candidates=[naive]).recipe == naive  # A4 has 49 keys
    with pytest.raises(ValueError, match="no candidate supports the 197 keys of A2"):
        ism.select(20.0, "A2", candidates=[naive])


def _cand(label, ops, db):
    return Candidate(label, ism.Recipe(), db, ops)


def test_pareto_front_keeps_exactly_the_undominated_points():
    pts = [_cand("a", 10, 30.0), _cand("b", 10, 31.0), _cand("c", 12, 30.5), _cand("d", 12, 33.0),
           _cand("e", 15, 32.0), _cand("f", 20, 34.0)]
    assert [c.label for c in pareto_front(pts)] == ["b", "d", "f"]


def test_catalog_front_is_not_dominated(a2_uniform):
    front = pareto_front(a2_uniform)
    assert front and [c.ops for c in front] == sorted(c.ops for c in front)
    for f in front:
        assert not any(c.ops <= f.ops and c.sqnr_db > f.sqnr_db for c in a2_uniform)
    for c in a2_uniform:  # everything off the front is matched or beaten by a front point no more costly
        assert any(f.ops <= c.ops and f.sqnr_db >= c.sqnr_db for f in front)
    assert all(math.isfinite(c.sqnr_db) for c in a2_uniform)
    assert np.isclose(front[-1].sqnr_db, max(c.sqnr_db for c in a2_uniform))


def test_select_on_your_own_samples():
    """samples=(q, k, v) from the user's model (NumPy or torch): the SQNR is measured on them."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    q, k, v = (rng.normal(0, 1.5, (1, 2, 60, 32)) for _ in range(3))
    k += rng.uniform(-4, 4, (1, 2, 1, 32))  # a per-channel key offset the synthetic workloads lack
    candidates = {"default": ism.Recipe.per_tensor(), "fast": ism.Recipe.fast(),
                  "transforms": ism.Recipe.per_tensor().replace(transforms=(ism.KeyOffset(),))}
    ref = ism.float_attention(q, k, v)
    measured = {label: ism.sqnr_db(ref, r.attention(q, k, v)) for label, r in candidates.items()}
    target = (measured["default"] + measured["transforms"]) / 2  # only the key offset reaches it
    chosen = ism.select(target, samples=(q, k, v), candidates=candidates)
    assert chosen.label == "transforms" and chosen.sqnr_db == pytest.approx(measured["transforms"])
    assert chosen.workload == "samples" and "your samples" in chosen.explanation
    as_tensors = ism.select(target, samples=tuple(torch.from_numpy(x) for x in (q, k, v)), candidates=candidates)
    assert as_tensors.label == "transforms"
    with pytest.raises(TypeError, match=r"samples must be a tuple \(q, k, v\)"):
        ism.select(30.0, samples=q)
    with pytest.raises(ValueError, match="samples: k must be a non-empty float array"):
        ism.select(30.0, samples=(q, k.astype(int), v))
    with pytest.raises(ValueError, match="no recipe of the 3 candidates reaches it on your samples"):
        ism.select(99.0, samples=(q, k, v), candidates=candidates)
