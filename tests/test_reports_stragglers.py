"""The report names the slowest rank from every rank's own times, with its host."""

import pytest
from collbench.reports.data import load
from collbench.reports.stragglers import lines, slowest_ranks

from collbench.cli import main
from collbench.stats import summarise
from collbench.store import ResultsWriter

# Four timed iterations of three ranks: rank 1 is slowest in three of them, rank 2 in one.
OWN = {0: [10.0, 10.0, 10.0, 10.0], 1: [14.0, 12.0, 10.0, 13.0], 2: [11.0, 11.0, 15.0, 11.0]}


def write_run(folder):
    key = {"source": "measured", "transport": "mpi", "algorithm": "ring", "nranks": 3, "size_bytes": 1024,
           "dtype": "float32", "op": "sum", "in_place": False, "count": 256}
    writer = ResultsWriter(folder, {"name": "straggle", "source": "measured", "nranks": 3,
                                    "rank_hosts": ["node0", "node1", "node2"]})
    combined = [max(times) for times in zip(*OWN.values())]
    samples = [{**key, "phase": "timed", "iter": i, "time_us": t, "rank": -1} for i, t in enumerate(combined)]
    samples += [{**key, "phase": "timed", "iter": i, "time_us": t, "rank": rank}
                for rank, times in OWN.items() for i, t in enumerate(times)]
    stats = summarise(combined, 1024, 3).as_dict()
    writer.add_point({**key, **stats, "ranks_per_node": 1, "first_us": 50.0, "n_wrong": 0,
                      "timing": "per-call"}, samples)
    writer.close()
    return folder


def test_the_rank_slowest_most_often_comes_first_with_its_host(tmp_path):
    data = load([write_run(tmp_path / "r")])
    assert len(data.samples) == 4 and len(data.rank_samples) == 12  # figures see the combined rows only
    slow = slowest_ranks(data)
    assert list(slow["rank"]) == [1, 2, 0]
    assert list(slow["host"]) == ["node1", "node2", "node0"]
    assert list(slow["slowest_share"]) == [0.75, 0.25, 0.0]
    # rank 1 over each iteration's median rank time: 14/11, 12/11, 10/10, 13/11 -> median 12.5/11
    assert slow["relative_median"].iloc[0] == pytest.approx(12.5 / 11)
    assert lines(slow)[0] == ("straggle: rank 1 on node1 took longest in 75% of 4 timed iterations; "
                              "its median time is 1.14× the ranks' median")


def test_the_report_index_lists_the_slowest_ranks(tmp_path):
    folder = write_run(tmp_path / "r")
    assert main(["report", str(folder), "--out", str(tmp_path / "report"), "--formats", "png"]) == 0
    index = (tmp_path / "report" / "index.md").read_text()
    assert "### Slowest ranks" in index and "rank 1 on node1 took longest in 75%" in index
