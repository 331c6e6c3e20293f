"""Analyses of the integer softmax recipes; ``python -m analysis`` renders ``docs/results.md``.

One module per study, each with a computing function that tests can call
(``compute(quick, progress) -> result``) and a ``markdown(result)`` renderer; the figures
are drawn separately (:mod:`analysis.plots`) from the same result objects:

=================  ==================================================================
``exp_error``      every exp strategy against the exact exp and its stated bound
``workload_table`` SQNR on A1-A7 for three input distributions, with the INT8 ceiling
``accumulation``   SQNR against sequence length per rule; where naive accumulation overflows
``granularity``    per-tensor / head / token / block INT8 scales; rejected combinations
``robustness``     SQNR against input amplitude 2^-4 .. 2^7
``pareto``         integer ops per element against SQNR; ``intsoftmax.select``'s choices
``latency``        GPU latency through ``qflash.benchmark.measure`` (CUDA only)
=================  ==================================================================

:mod:`analysis.report` runs them and writes the report; every section names the command
and git commit that produced it.
"""
