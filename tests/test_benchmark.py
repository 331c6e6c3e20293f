"""The benchmark's row shapes and tables (no GPU: the tables are built from a results dict)."""
from qflash import benchmark


def test_llm_rows_take_their_batch():
    assert benchmark.shape_of("D1", 1) == (1, 32, 1, 128)
    assert benchmark.kv_shape_of("D1", 8) == (8, 32, 32768, 128)
    assert benchmark.kv_shape_of("D2", 8) == (8, 8, 32768, 128)  # GQA: 8 K/V heads for 32 query heads
    assert benchmark.shape_of("L1", 2) == (2, 32, 4096, 128)
    assert set(benchmark.row_recipes("D1", 1)) == {"fast", "long_context", "int_flashattention"}  # default: <= 8196 keys


def test_long_rows_table_shows_splits_and_the_unsplit_time():
    paths = {f"{p}_{m}_us": 10.0 for p in ("int8", "static", "dynamic") for m in ("graph", "eager", "host")}
    vit = dict(workload="A2", batch=1, shape=[1, 6, 197, 64], sdpa_backend="flash", sdpa_graph_us=5.0,
               sdpa_host_us=8.0, recipes={"default": dict(paths), "fast": dict(paths)})
    decode = dict(workload="D1", batch=1, shape=[1, 32, 1, 128], keys=32768, sdpa_backend="cudnn", sdpa_graph_us=40.0,
                  sdpa_host_us=8.0, recipes={"fast": dict(paths, int8_graph_us=30.0, splits=16,
                                                          int8_unsplit_graph_us=120.0),
                                             "long_context": dict(paths, int8_graph_us=50.0)})
    text = benchmark.markdown({"rows": [vit, decode]})
    line = next(x for x in text.splitlines() if x.startswith("| D1 | 1 | 32768"))
    assert "30.0 (16 splits; unsplit 120.0) | 0.75" in line
    assert line.endswith("| 50.0 | 1.25 |")
