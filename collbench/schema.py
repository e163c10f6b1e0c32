"""The results schema: the columns every results folder holds, measured or predicted.

A results folder (one run) contains:

- ``run.json``: provenance (config, hosts, versions, environment, git commit, times, and for
  predictions the network description or calibration used).
- ``samples.csv``: one row per iteration and rank (:data:`SAMPLE_COLUMNS`); ``phase`` is
  ``first`` (the very first call of a point, kept on its own), ``warmup`` or ``timed``. Rows
  with ``rank`` -1 hold the iteration's time with the ranks combined as the run's
  ``average`` says (the maximum over ranks unless asked otherwise for per-call timing, the
  mean for aggregate timing); rows with ``rank`` r >= 0 hold rank r's own time, so a slow
  rank can be found. Simulated and model runs write no samples.
- ``summary.csv``: one row per point (:data:`SUMMARY_COLUMNS`), statistics over the ``timed``
  samples with ``rank`` -1 only, from :func:`collbench.stats.summarise`.

Every row and ``run.json`` carry the :data:`SCHEMA_VERSION` they were written with, in the
column and key ``schema_version``; folders from before versioning (no such column) are
schema 1 and still read.

Units are in the column names; GB means 1e9 bytes. ``source`` is ``measured``, ``simulated``
or ``model`` (closed form), so measured and predicted rows share every other column.
"""

POINT_KEY = ("source", "transport", "algorithm", "nranks", "size_bytes", "dtype", "op", "in_place")
"""Columns that identify a point; a resumed run skips points whose key is already stored."""

SCHEMA_VERSION = 3
"""Version of the results layout: 2 added ``schema_version`` and the append-only CSV files;
3 added each rank's own sample rows (``rank``), ``time_us`` and ``timing``."""

SAMPLE_COLUMNS = (*POINT_KEY, "count", "phase", "iter", "time_us", "rank", "schema_version")

COMBINED_RANKS = -1
"""``rank`` of the sample rows that hold an iteration's time with the ranks combined."""

SUMMARY_COLUMNS = (
    *POINT_KEY,
    "count",
    "ranks_per_node",
    "iters",
    "first_us",
    "min_us",
    "median_us",
    "mean_us",
    "p95_us",
    "max_us",
    "cv",
    "ci_low_us",
    "ci_high_us",
    "ci_level",
    "algbw_GBps",
    "busbw_GBps",
    "n_wrong",
    "time_us",
    "timing",
    "schema_version",
)
"""``ci_low_us``/``ci_high_us``: distribution-free confidence interval of the median at level
``ci_level``, the interval's exact coverage for its number of samples (at least 0.95 from 6
samples on; with fewer, min..max and its lower level: 0.75 for 3). ``n_wrong`` is the number
of wrong elements summed over ranks (-1 where not checked, e.g. simulated). ``time_us`` is the
point's reported time, from which ``algbw_GBps`` and ``busbw_GBps`` come: per-call timing's
median, aggregate timing's mean (nccl-tests' number). ``timing`` is ``per-call`` or
``aggregate`` (empty for predictions)."""

OPTIONAL_SAMPLE_COLUMNS = {"rank": COMBINED_RANKS}
OPTIONAL_SUMMARY_COLUMNS = {"time_us": None, "timing": "per-call"}
"""Columns that folders written before they existed lack, and the value they read as
(``time_us`` None: the row's ``median_us``, which was then the reported time; ``timing``
only for measured rows)."""

SOURCES = ("measured", "simulated", "model")

PROVENANCE_KEYS = (
    "name",  # the run's name (folder suffix)
    "source",  # measured | simulated | model
    "command",  # argv that produced it
    "config",  # the sweep: algorithms, transport, sizes, iters, warmup_iters, check_iters, dtype, op, ...
    "nranks",
    "hosts",  # sorted unique host names
    "ranks_per_node",  # {host: ranks}
    "rank_hosts",  # [host of rank 0, host of rank 1, ...]: where each rank ran
    "versions",  # {python, numpy, mpi4py, mpi_library, collbench, cupy, nccl, rdma_core, ...}
    "environment",  # variables that change MPI/NCCL/UCX behaviour, SLURM_*
    "slurm",  # {job_id, nodelist, partition, ntasks_per_node, ...} or null
    "slurm_history",  # every Slurm job that wrote into this folder (requeues, resubmissions)
    "git_commit",
    "machine",  # {platform, processor, cpus}
    "mpi_threads",  # {requested, provided, mpi4py_rc_environment}: MPI's thread level
    "start_time",  # ISO 8601, UTC
    "end_time",
    "schema_version",
)
"""Top-level keys of ``run.json``. Simulated and model runs add ``network`` (the network
description used) and, when calibrated, ``calibration``."""
