"""Figures and tables for papers from stored results, measured and predicted side by side.

Reads results folders with pandas and draws with matplotlib (Agg) only: it never imports MPI,
CuPy, pyverbs or the simulator, since predictions arrive as results folders too. Start at
:func:`collbench.reports.build.make_report`; ``collbench report`` is :mod:`collbench.reports.cli`.
"""
