"""The analysis suite: each study reproduces the core's values, and the quick report renders."""
import io
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import intsoftmax as ism
from analysis import accumulation, exp_error, granularity, latency, pareto, report, robustness, workload_table
from analysis.progress import Progress
from intsoftmax.select import catalog
from analysis.provenance import Provenance
from intsoftmax.select import choose
from intsoftmax.testing import check_exp_bound
from intsoftmax.workloads import DISTRIBUTIONS, WORKLOADS, qkv

REPO = pathlib.Path(__file__).resolve().parents[1]


# -- 1. exp strategies ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exp_study():
    return exp_error.compute()


def test_exp_study_covers_every_strategy_and_matches_the_bound_checker(exp_study):
    kinds = {c.strategy.kind for c in exp_study.curves}
    assert kinds == set(ism.available_strategies("exp"))
    for c in exp_study.curves:
        report_ = check_exp_bound(c.strategy, c.nat_unit)
        assert c.bound_ratio == pytest.approx(report_.ratio, rel=1e-12), c.label
        assert c.bound_ratio <= 1.0, f"{c.label}: stated bound exceeded"
        assert c.exp_ops == c.strategy.op_count().total
        assert c.recipe_ops == ism.Recipe(exp=c.strategy).op_count().total
        assert c.got.size == c.strategy.domain(c.strategy.plan(np.float64(c.nat_unit)).consts
                                                if c.nat_unit else None).size


def test_exp_study_numbers(exp_study):
    by = {c.label: c for c in exp_study.curves}
    # the I-ViT line's worst relative error is 6.15% and is reached in the first octave
    assert by["shift_linear_exp2"].max_rel_error_first_octave == pytest.approx(0.0615, abs=5e-4)
    # QFlash's exp at a small amplitude is off by far more than at the paper's amplitude
    assert by["qflash_exp2, a=0.5"].max_rel_error_first_octave > 5 * by["qflash_exp2, a=4"].max_rel_error_first_octave
    table = exp_error.markdown(exp_study)
    assert len(re.findall(r"^\| `", table, re.M)) == len(exp_study.curves)  # one row per strategy
    assert f"holds for {len(exp_study.curves)} of {len(exp_study.curves)} strategies" in table


# -- 2. workload table ---------------------------------------------------------------------------
def test_workload_table_equals_recipe_attention():
    recipes = {"qflash": ism.Recipe.qflash(), "per_tensor": ism.Recipe.per_tensor()}
    table = workload_table.compute(recipes=recipes)
    assert set(table.workloads) == set(WORKLOADS) and set(table.distributions) == set(DISTRIBUTIONS)
    for dist in DISTRIBUTIONS:
        for w in WORKLOADS:
            q, k, v = qkv(w, dist, seed=0)
            ref = ism.float_attention(q, k, v)
            for label, r in recipes.items():
                assert table.sqnr[(dist, w, label)] == ism.sqnr_db(ref, r.attention(q, k, v)), (dist, w, label)
            ceiling = ism.sqnr_db(ref, ism.Recipe.per_tensor().quantized_reference(q, k, v))
            assert table.sqnr[(dist, w, workload_table.CEILING)] == ceiling
    # the per-tensor recipe on A2 (the README quoted it while it was the default)
    assert table.sqnr[("uniform", "A2", "per_tensor")] == pytest.approx(37.4, abs=0.05)
    md = workload_table.markdown(table)
    assert f"{table.sqnr[('gaussian', 'A5', 'qflash')]:.2f}" in md


def test_report_recipes_have_one_per_exp_strategy():
    from analysis.recipes import report_recipes
    recipes = report_recipes()
    assert list(recipes)[:2] == ["qflash", "per_tensor"]
    kinds = {r.exp.kind for r in recipes.values()}
    assert kinds == set(ism.available_strategies("exp"))
    assert len(set(recipes.values())) == len(recipes)


# -- 3. accumulation -----------------------------------------------------------------------------
@pytest.mark.parametrize("acc_bits", [32, 64])
def test_naive_worst_case_overflows_exactly_at_the_recipes_limit(acc_bits):
    recipe = ism.Recipe(accumulation=ism.NaiveScaleAccumulation(acc_bits=acc_bits))
    limit = recipe.max_seq_len()
    assert accumulation.worst_case_overflow(recipe) == limit + 1  # found by search, not read from the Recipe
    accumulation.staircase(recipe, limit)
    with pytest.raises(ism.IntegerOverflowError, match="scale explosion"):
        accumulation.staircase(recipe, limit + 1)


@pytest.fixture(scope="module")
def acc_study():
    return accumulation.compute(quick=True)


def test_accumulation_study(acc_study):
    curves = {c.label: c for c in acc_study.curves}
    for c in acc_study.curves:
        assert c.stated_limit == c.recipe.max_seq_len()
        assert c.worst_case_overflow == c.stated_limit + 1
        if c.data_overflow is not None:  # real data never overflows before the worst case does
            assert c.data_overflow > c.stated_limit
    for label in ("naive, 32-bit", "naive, 64-bit"):
        c = curves[label]
        assert c.data_overflow is not None and c.data_overflow <= max(acc_study.lengths)
        assert all(n < c.data_overflow for n in c.sqnr)  # no SQNR reported past the overflow
    for label in ("scale release", "two-pass", "lazy rescale (1 octave)"):
        assert curves[label].data_overflow is None
        assert set(curves[label].sqnr) == set(acc_study.lengths)


def test_accumulation_study_overflow_point_is_where_the_golden_model_raises(acc_study):
    q, k, v = accumulation.make_data(max(acc_study.lengths), acc_study.heads, acc_study.queries)
    c = next(c for c in acc_study.curves if c.label == "naive, 64-bit")
    n = c.data_overflow
    c.recipe.attention(q, k[..., :n - 1, :], v[..., :n - 1, :], check_limits=False)  # fits
    with pytest.raises(ism.IntegerOverflowError):
        c.recipe.attention(q, k[..., :n, :], v[..., :n, :], check_limits=False)
    # and an SQNR point equals the golden model's
    sr = next(c for c in acc_study.curves if c.label == "scale release")
    m = acc_study.lengths[-1]
    kk, vv = k[..., :m, :], v[..., :m, :]
    assert sr.sqnr[m] == ism.sqnr_db(ism.float_attention(q, kk, vv), sr.recipe.attention(q, kk, vv))


# -- 4. granularity ------------------------------------------------------------------------------
def test_granularity_study_lists_rejections_with_the_recipes_reason():
    study = granularity.compute(quick=True)
    assert len(study.rows) == len(granularity.POLICIES) ** 3
    for row in study.rows:
        fields = dict(q_granularity=granularity.POLICIES[row.q], k_granularity=granularity.POLICIES[row.k],
                      v_granularity=granularity.POLICIES[row.v])
        expect_rejected = not (fields["k_granularity"].row_uniform and fields["v_granularity"].row_uniform)
        assert (row.rejected is not None) == expect_rejected, row
        if expect_rejected:
            with pytest.raises(ValueError) as err:
                ism.Recipe(**fields)
            assert row.rejected == str(err.value)
            assert "breaks integer comparability" in row.rejected
    q, k, v = granularity.make_inputs()
    r = ism.Recipe(q_granularity=ism.PerToken(), k_granularity=ism.PerHead(), v_granularity=ism.PerHead())
    row = next(x for x in study.accepted if (x.q, x.k, x.v) == ("per-token", "per-head", "per-head"))
    ref = ism.float_attention(q, k, v)
    out = r.attention(q, k, v)
    assert row.sqnr == ism.sqnr_db(ref, out)
    assert row.head_sqnr == pytest.approx(np.mean([ism.sqnr_db(ref[:, h], out[:, h]) for h in range(6)]))
    assert row.ceiling == ism.sqnr_db(ref, r.quantized_reference(q, k, v))
    # finer scales help on these inputs: per-token Q beats per-tensor Q by several dB
    base = next(x for x in study.accepted if (x.q, x.k, x.v) == ("per-tensor",) * 3)
    assert row.sqnr > base.sqnr + 3.0
    md = granularity.markdown(study)
    assert "Rejected combinations (48)" in md and "Use PerTensor() or PerHead() for K." in md


# -- 5. robustness -------------------------------------------------------------------------------
def test_robustness_sweep():
    recipes = {"qflash": ism.Recipe.qflash(), "per_tensor": ism.Recipe.per_tensor()}
    study = robustness.compute(quick=True, recipes=recipes)
    assert study.amplitudes[0] == 2.0**-4 and study.amplitudes[-1] == 2.0**7 and len(study.amplitudes) == 12
    assert len(robustness.amplitudes(False)) == 23
    a = study.amplitudes[3]
    q, k, v = qkv("A2", "uniform", seed=0, amplitude=a)
    direct = ism.sqnr_db(ism.float_attention(q, k, v), ism.Recipe.per_tensor().attention(q, k, v))
    assert study.sqnr[("per_tensor", a)] == direct
    # docs/algorithms.md §9: the per-tensor recipe tracks the INT8 ceiling at every amplitude; QFlash's does not
    gaps = {lab: [study.sqnr[(robustness.CEILING, x)] - study.sqnr[(lab, x)] for x in study.amplitudes]
            for lab in recipes}
    assert max(gaps["per_tensor"]) < 0.5
    assert max(gaps["qflash"]) > 20.0


# -- 6. pareto -----------------------------------------------------------------------------------
def test_pareto_study_agrees_with_select():
    study = pareto.compute(quick=True)
    (panel,) = study.panels
    assert len(panel.candidates) == len(catalog())
    for target, sel in panel.selections.items():
        if isinstance(sel, str):
            with pytest.raises(ValueError):
                choose(panel.candidates, target, "A2", "uniform")
            continue
        assert sel.sqnr_db >= target
    direct = ism.select(35.0, "A2", "uniform")
    assert panel.selections[35.0].recipe == direct.recipe
    assert isinstance(panel.selections[40.0], str) and "no recipe" in panel.selections[40.0]


# -- 7. latency ----------------------------------------------------------------------------------
def test_latency_is_skipped_without_cuda():
    reason = latency.cuda_unavailable_reason()
    if reason is None:
        pytest.skip("a CUDA device is present: the GPU suite measures latency")
    study = latency.compute(quick=True)
    assert study.skipped == reason and not study.rows
    assert latency.markdown(study).startswith("Skipped: ")


# -- report, provenance, progress, command line ---------------------------------------------------
def test_quick_report_renders_into_a_temporary_directory(tmp_path):
    done = subprocess.run([sys.executable, "-m", "analysis", "--quick", "--out", str(tmp_path), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "results.md").read_text()
    for study in report.STUDIES:
        assert f". {study.title}\n" in text
    assert f". {report.ACCURACY_TITLE}\n" in text
    images = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert len(images) == 9
    for rel in images:
        png = tmp_path / rel
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamps = re.findall(r"\*Produced by `python -m analysis --quick --out \S+ --no-progress` at commit `([^`]+)`",
                        text)
    assert len(stamps) == len(report.STUDIES) + 1
    if latency.cuda_unavailable_reason() is not None:
        assert "Skipped: no CUDA device is present" in text or "Skipped: torch is not installed" in text
    if not (REPO / "analysis" / "accuracy.py").exists():
        assert "Not available yet" in text


def test_partial_and_quick_runs_never_default_to_the_committed_report():
    assert report.default_out(report.NAMES, quick=False) == REPO / "docs"
    assert report.default_out(report.NAMES, quick=True) == REPO / "build/analysis"
    assert report.default_out(["exp"], quick=False) == REPO / "build/analysis"


def test_unknown_study_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        report.main(["expo"])
    assert "unknown study 'expo'" in capsys.readouterr().err


def test_provenance_names_commit_and_changes(monkeypatch):
    from analysis import provenance
    monkeypatch.setattr(provenance, "_git", lambda *a: None)
    p = Provenance.current(["--quick"])
    assert p.command == "python -m analysis --quick" and p.revision == "unknown commit"
    assert Provenance("c", "abc1234", True).revision == "abc1234 + uncommitted changes"
    assert Provenance("c", "abc1234", False).markdown() == "*Produced by `c` at commit `abc1234`.*"
    replies = {"rev-parse": "abc1234\n", "status": " M intsoftmax/recipe.py\n"}
    monkeypatch.setattr(provenance, "_git", lambda *a: replies[a[0]])
    assert Provenance.current([]).revision == "abc1234 + uncommitted changes"


def test_progress_writes_to_its_stream_only_when_enabled():
    out = io.StringIO()
    with Progress("sweep", 8, stream=out) as p:
        for _ in range(8):
            p.step()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[sweep] 0/8" and lines[-1].startswith("[sweep] 8/8 done in")
    assert 3 <= len(lines) <= 6  # a line about every quarter, not one per step
    silent = io.StringIO()
    with Progress("sweep", 8, stream=silent, enabled=False) as p:
        p.step()
    assert silent.getvalue() == ""


def test_help_runs_without_matplotlib():
    """matplotlib is the analysis extra: the command line and the studies import without it."""
    code = ("import sys, runpy; sys.modules['matplotlib'] = None; sys.argv = ['analysis', '--help']; "
            "runpy.run_module('analysis', run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage: python -m analysis" in res.stdout


# -- 8. transforms -------------------------------------------------------------------------------
def test_transforms_study_measures_each_transform_against_both_ceilings():
    from analysis import transforms
    study = transforms.compute(quick=True)
    assert set(study.sqnr) == {(d, t) for d in transforms.DISTRIBUTIONS for t in transforms.RECIPES}
    q, k, v = transforms.make_inputs("key/value offsets")
    ref = ism.float_attention(q, k, v)
    recipe = ism.Recipe.per_tensor().replace(transforms=transforms.TRANSFORMS["all three"])
    assert study.sqnr["key/value offsets", "all three"] == pytest.approx(ism.sqnr_db(ref, recipe.attention(q, k, v)))
    assert study.sqnr["key/value offsets", "all three"] > study.sqnr["key/value offsets", "none"] + 3
    text = transforms.markdown(study)
    assert "| key/value offsets |" in text and "ceiling after all three" in text


def test_long_rows_study_against_int_flashattention():
    """Each cell is the golden SQNR on the first N keys; per_tensor is left out past its 8196 keys;
    INT-FlashAttention's 7-bit P loses with N, and the long-context recipe stays above it."""
    from analysis import long_rows
    study = long_rows.compute(quick=True)
    assert study.keys == (256, 2048, 8192)
    rng = np.random.default_rng(long_rows.SEED)
    q = rng.normal(0, 1, (1, 2, 128, 128))
    k, v = (rng.normal(0, 1, (1, 2, 8192, 128))[..., :2048, :] for _ in range(2))
    want = ism.sqnr_db(ism.float_attention(q, k, v), ism.Recipe.int_flashattention().attention(q, k, v))
    assert study.sqnr["N(0, 1)", "int_flashattention", 2048] == pytest.approx(want, abs=1e-9)
    ifa = study.curve("N(0, 1)", "int_flashattention")
    assert ifa == sorted(ifa, reverse=True)
    for dist in long_rows.DISTRIBUTIONS:
        assert study.sqnr[dist, "long_context", 8192] > study.sqnr[dist, "int_flashattention", 8192]
    assert "| 8192 |" in long_rows.markdown(study)
