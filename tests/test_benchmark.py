"""The benchmark's row shapes and tables (no GPU: the tables are built from a results dict)."""
import pytest

import intsoftmax as ism
from qflash import benchmark

from kernel_utils import needs_kernel


def test_llm_rows_take_their_batch():
    assert benchmark.shape_of("D1", 1) == (1, 32, 1, 128)
    assert benchmark.kv_shape_of("D1", 8) == (8, 32, 32768, 128)
    assert benchmark.kv_shape_of("D2", 8) == (8, 8, 32768, 128)  # GQA: 8 K/V heads for 32 query heads
    assert benchmark.shape_of("L1", 2) == (2, 32, 4096, 128)
    assert set(benchmark.row_recipes("D1", 1)) == {"fast", "long_context", "int_flashattention"}  # per_tensor: <= 8196 keys


def test_long_rows_table_shows_splits_and_the_unsplit_time():
    paths = {f"{p}_{m}_us": 10.0 for p in ("int8", "static", "dynamic") for m in ("graph", "eager", "host")}
    vit = dict(workload="A2", batch=1, shape=[1, 6, 197, 64], sdpa_backend="flash", sdpa_graph_us=5.0,
               sdpa_host_us=8.0, recipes={"per_tensor": dict(paths), "fast": dict(paths)})
    decode = dict(workload="D1", batch=1, shape=[1, 32, 1, 128], keys=32768, sdpa_backend="cudnn", sdpa_graph_us=40.0,
                  sdpa_host_us=8.0, recipes={"fast": dict(paths, int8_graph_us=30.0, splits=16,
                                                          int8_unsplit_graph_us=120.0),
                                             "long_context": dict(paths, int8_graph_us=50.0)})
    swin = dict(vit, workload="A4", batch=256, recipes={"per_tensor": dict(paths), "fast": dict(paths),
                                                          "default": dict(paths, static_graph_us=10.4)})
    text = benchmark.markdown({"rows": [vit, decode, swin]})
    assert "| A4 | 256 | 10.0 / 10.0 / 10.0 | 10.0 / 10.4 / 10.0 | 1.00 / 1.04 / 1.00 |" in text
    long_table = text.split("| workload | batch | keys |")[1].split("\n\n")[0]
    assert "| D1 |" in long_table and "| A4 |" not in long_table  # the LLM rows only
    line = next(x for x in text.splitlines() if x.startswith("| D1 | 1 | 32768"))
    assert "30.0 (16 splits; unsplit 120.0) | 0.75" in line
    assert line.endswith("| 50.0 | 1.25 |")


@needs_kernel
@pytest.mark.parametrize("name", ["per_tensor", "default", "int_flashattention", "long_context"])
def test_recipe_calls_run_each_path_of_a_row(name):
    """The benchmark's calls per recipe, on a small shape on the test device: every path runs and
    they agree (int8 copies at amax 4 against the float paths' own ranges: near, not equal);
    transforms and per-token Q run folded in the int8 and static paths; INT-FA has no static path."""
    import torch
    from kernel_utils import DEVICE
    recipe = {**benchmark.RECIPES, **benchmark.LONG_RECIPES, **benchmark.DEFAULT_RECIPES}[name]
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.empty((1, 2, 40, 32)).uniform_(-4, 4, generator=gen).to(DEVICE, torch.float16) for _ in range(3))
    calls = benchmark.recipe_calls(recipe, q, k, v, causal=False, gqa=False)
    assert list(calls) == (["int8", "dynamic"] if recipe.accumulation.float_softmax else ["int8", "static", "dynamic"])
    outs = [calls[p]().float().cpu() for p in calls]
    ref = torch.nn.functional.scaled_dot_product_attention(*(x.float().cpu() for x in (q, k, v)))
    for out in outs:
        assert out.shape == q.shape and torch.isfinite(out).all()
        assert ism.sqnr_db(ref.numpy(), out.numpy()) > 25


def test_merge_keeps_the_benchmark_order_the_latest_row_and_the_extras():
    row = lambda w, b, us: dict(workload=w, batch=b, sdpa_graph_us=us, recipes={})  # noqa: E731
    part = lambda rows, **extra: dict(date="2026-12-03", gpu="NVIDIA H200", commit="abc", command="run",  # noqa: E731
                                      torch="2.11", rows=rows, **extra)
    a = part([row("L1", 2, 1.0), row("A2", 256, 2.0)])
    b = part([row("A2", 256, 3.0), row("A1", 1, 4.0)], energy=[{"workload": "A2"}])
    merged = benchmark.merge([a, b], ["a.json", "b.json"])
    assert [(r["workload"], r["batch"], r["sdpa_graph_us"]) for r in merged["rows"]] == \
        [("A1", 1, 4.0), ("A2", 256, 3.0), ("L1", 2, 1.0)]
    assert merged["energy"] == [{"workload": "A2"}] and "unfused" not in merged
    assert merged["command"] == "python -m qflash.benchmark --merge a.json b.json" and merged["runs"] == ["run", "run"]
    with pytest.raises(ValueError, match="different commits"):
        benchmark.merge([a, dict(b, commit="def")], ["a.json", "b.json"])


def test_merge_carries_earlier_commits_rows_with_their_commit():
    """Rows and comparisons a run did not measure come from an earlier commit's results, each
    tagged with that commit (and named so in the tables); measured rows win; GPUs must match."""
    row = lambda w, b, us: dict(workload=w, batch=b, sdpa_graph_us=us, recipes={})  # noqa: E731
    part = lambda rows, commit, **extra: dict(date="2026-12-03", gpu="NVIDIA H200", commit=commit,  # noqa: E731
                                              command="run", torch="2.11", rows=rows, **extra)
    new = part([row("A2", 256, 3.0)], "new")
    old = part([row("A2", 256, 9.0), row("L1", 2, 1.0)], "old", energy=[{"workload": "A7", "batch": 1}])
    merged = benchmark.merge([new], ["a.json"], [old], ["old.json"])
    assert [(r["workload"], r["sdpa_graph_us"], r.get("commit")) for r in merged["rows"]] == \
        [("A2", 3.0, None), ("L1", 1.0, "old")]
    assert merged["commit"] == "new" and merged["energy"] == [{"workload": "A7", "batch": 1, "commit": "old"}]
    assert merged["command"].endswith("--merge a.json --carry old.json")
    assert benchmark._label(merged["rows"][1]) == "L1 (at old)"
    with pytest.raises(ValueError, match="different GPUs"):
        benchmark.merge([new], ["a.json"], [dict(old, gpu="NVIDIA H100")], ["old.json"])
