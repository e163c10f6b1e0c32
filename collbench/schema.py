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

SCHEMA_VERSION = 4
"""Version of the results layout: 2 added ``schema_version`` and the append-only CSV files,
3 the memory-registration columns, 4 each rank's own sample rows (``rank``), ``reported_us`` and
``timing`` (:data:`ADDED_COLUMNS`)."""

SAMPLE_COLUMNS = (*POINT_KEY, "count", "phase", "iter", "time_us", "registrations", "rank",
                  "schema_version")
"""``registrations``: memory registrations the transport made during that call, summed over
ranks in the ``rank`` -1 rows and the rank's own in the others (empty for transports that
register nothing themselves): a timed call with a non-zero count paid for registering inside
its time."""

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
    "reg_hits",
    "reg_misses",
    "reg_timed",
    "reported_us",
    "timing",
    "schema_version",
)
"""``ci_low_us``/``ci_high_us``: distribution-free confidence interval of the median at level
``ci_level``, the interval's exact coverage for its number of samples (at least 0.95 from 6
samples on; with fewer, min..max and its lower level: 0.75 for 3). ``n_wrong`` is the number
of wrong elements summed over ranks (-1 where not checked, e.g. simulated). ``reg_hits``,
``reg_misses``: the transport's registration cache over the timed calls, summed over ranks;
``reg_timed``: the registrations made inside timed calls (non-zero flags a point whose timing
includes registering); all three empty where the transport keeps no registration cache.
``reported_us`` is the point's reported time, from which ``algbw_GBps`` and ``busbw_GBps`` come:
per-call timing's median, aggregate timing's mean (nccl-tests' number). ``timing`` is
``per-call`` or ``aggregate`` (empty for predictions)."""

ADDED_COLUMNS = {"registrations": 3, "reg_hits": 3, "reg_misses": 3, "reg_timed": 3,
                 "rank": 4, "reported_us": 4, "timing": 4}
"""Columns added after schema 2, with the version that added them: files of an older schema
lack them and read as empty, or as :data:`OPTIONAL_SAMPLE_COLUMNS` and
:data:`OPTIONAL_SUMMARY_COLUMNS` say."""

OPTIONAL_SAMPLE_COLUMNS = {"rank": COMBINED_RANKS}
OPTIONAL_SUMMARY_COLUMNS = {"reported_us": None, "timing": "per-call"}
"""What rows written before these columns existed read as (``reported_us`` None: the row's
``median_us``, which was then the reported time; ``timing`` only for measured rows)."""

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
