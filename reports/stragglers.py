"""Which rank is slow: from each rank's own times (``rank`` >= 0 sample rows), per run, the
ranks that most often took longest in a timed iteration, with their host.

In an all-reduce every rank waits for the others, so all ranks' times are close; the one that
finishes last in most iterations, and whose times run above the ranks' median, is where to
look first (a slow node, a busy core, a bad link)."""

from __future__ import annotations

import pandas as pd
from collbench.reports.data import ReportData

COLUMNS = ("run", "rank", "host", "slowest_share", "relative_median", "iterations")
ITERATION = ("run", "transport", "algorithm", "nranks", "size_bytes", "dtype", "op", "phase", "iter")


def slowest_ranks(data: ReportData, top: int = 3) -> pd.DataFrame:
    """The *top* ranks of each run by ``slowest_share`` (the share of timed iterations in
    which the rank's time was the largest, ties counting for each), with ``relative_median``
    (the median of the rank's time over the iteration's median rank time) and the rank's host
    from ``run.json``'s ``rank_hosts`` (empty if not recorded). Empty without per-rank samples."""
    own = data.rank_samples
    if own.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    own = own[own["phase"] == "timed"]
    times = own.groupby(list(ITERATION))["time_us"]
    own = own.assign(slowest=own["time_us"] >= times.transform("max"),
                     relative=own["time_us"] / times.transform("median"))
    ranks = own.groupby(["run", "rank"]).agg(slowest_share=("slowest", "mean"),
                                             relative_median=("relative", "median"),
                                             iterations=("slowest", "size")).reset_index()
    ranks["rank"] = ranks["rank"].astype(int)
    ranks["host"] = [_host(data.runs.get(run, {}), rank) for run, rank in zip(ranks["run"], ranks["rank"])]
    ranks = ranks.sort_values(["run", "slowest_share", "relative_median"], ascending=[True, False, False])
    return ranks.groupby("run", sort=False).head(top)[list(COLUMNS)].reset_index(drop=True)


def _host(provenance: dict, rank: int) -> str:
    hosts = provenance.get("rank_hosts") or []
    return str(hosts[rank]) if 0 <= rank < len(hosts) else ""


def lines(frame: pd.DataFrame) -> list[str]:
    """One sentence per rank of :func:`slowest_ranks`, for the index page."""
    return [f"{r.run}: rank {r.rank}{f' on {r.host}' if r.host else ''} took longest in "
            f"{r.slowest_share:.0%} of {r.iterations} timed iterations; its median time is "
            f"{r.relative_median:.2f}× the ranks' median" for r in frame.itertuples()]
