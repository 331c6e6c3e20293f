"""Analyses of the integer softmax recipes (SQNR, error, cost); `python -m analysis` renders the report."""
