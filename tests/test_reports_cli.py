"""``collbench report`` end to end: the files, the index, the tables, and one clear error
naming the file for missing or corrupt results."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from collbench.reports.data import load
from collbench.reports.synthetic import write_run

from collbench.cli import main
from collbench.errors import ResultsError
from collbench.store import read_results

SIZES = (1024, 1 << 20)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    measured = write_run(root / "m", name="clusterA", ranks=(4, 8), sizes=SIZES, seed=3)
    simulated = write_run(root / "s", name="sim", source="simulated", ranks=(4, 8, 16), sizes=SIZES,
                          calibrated_from=[measured])
    out = root / "out"
    code = main(["report", str(measured), str(simulated), "--out", str(out), "--formats", "pdf,png",
                 "--baseline", "ring", "--size", "1M", "--ranks", "8"])
    assert code == 0
    return out, measured


def test_every_figure_is_written_with_its_data(report):
    out, _ = report
    stems = ["time_vs_size", "busbw_vs_size", "scaling", "bars_P8_1MiB", "distribution_P8_1MiB",
             "predicted_vs_measured", "winner_map"]
    for stem in stems:
        for ext in ("pdf", "png"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000, stem
        assert (out / "data" / f"{stem}.csv").exists()
    index = (out / "index.md").read_text()
    assert [m for m in re.findall(r"!\[[^\]]*\]\(([^)]+)\.png\)", index)] == stems
    assert "Figures not drawn" not in index
    assert "<img src=\"bars_P8_1MiB.png\"" in (out / "index.html").read_text()


def test_pdf_fonts_are_embedded_truetype(report):
    out, _ = report
    pdf = (out / "time_vs_size.pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf


def test_index_caption_carries_provenance(report):
    out, measured = report
    index = (out / "index.md").read_text()
    prov = json.loads((measured / "run.json").read_text())
    for needle in (*prov["hosts"], "4 ranks per node", "transport mpi", "float32 sum",
                   "20 timed iterations after 3 warm-ups", prov["start_time"][:10], prov["git_commit"][:10],
                   "numpy 2.1.0", "simulated run “sim”"):
        assert needle in index, needle


def test_tables_hold_the_statistics_and_speedups(report):
    out, measured = report
    _, summary, _ = read_results(measured)
    at = summary[(summary["nranks"] == 8) & (summary["size_bytes"] == 1 << 20)].set_index("algorithm")
    md = (out / "summary.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| naive · measured | 8 | 1 MiB |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    median, low, high = (at.loc["naive", c] for c in ("median_us", "ci_low_us", "ci_high_us"))
    half = 0.5 * 10.0 ** -len(cells[3].partition(".")[2]) + 1e-9  # half the last digit shown
    assert float(cells[3]) == pytest.approx(median, abs=half)
    assert [float(v) for v in cells[4].strip("[]").split(",")] == pytest.approx([low, high], abs=half)
    # One number format per column: every median has as many decimals as every other.
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in md.splitlines()[2:]]
    for col in (3, 5, 6):
        assert len({len(r[col].partition(".")[2]) for r in rows if r[col] != "–"}) == 1, col
    ratio = at.loc["ring", "median_us"] / at.loc["naive", "median_us"]
    assert cells[6].endswith("×") and float(cells[6][:-1]) == pytest.approx(
        ratio, abs=0.5 * 10.0 ** -len(cells[6][:-1].partition(".")[2]) + 1e-9)
    assert "Speed-up vs ring" in md.splitlines()[0]
    tex = (out / "summary.tex").read_text()
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"naive $\cdot$ measured & 8 & 1 MiB" in tex


def test_missing_prediction_is_said_in_the_index(tmp_path, capsys):
    measured = write_run(tmp_path / "m", name="solo", ranks=(8,), sizes=SIZES)
    assert main(["report", str(measured), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    index = (tmp_path / "out" / "index.md").read_text()
    assert "## Figures not drawn" in index and "collbench sim" in index
    assert "scaling needs a series with two or more rank counts" in index
    assert "not drawn: Predicted vs measured" in capsys.readouterr().out


@pytest.mark.parametrize("damage, named", [
    (lambda f: (f / "run.json").unlink(), "run.json"),
    (lambda f: (f / "run.json").write_text("{not json"), "run.json"),
    (lambda f: (f / "summary.csv").unlink(), "summary.csv"),
    (lambda f: (f / "summary.csv").write_text("source,algorithm\nmeasured,ring\n"), "summary.csv"),
    (lambda f: (f / "summary.csv").write_text(
        (f / "summary.csv").read_text().replace(",naive,8,", ",naive,oops,", 1)), "summary.csv"),
    (lambda f: (f / "samples.csv").write_text(
        (f / "samples.csv").read_text().rsplit("\n", 2)[0] + "\nmeasured,mpi,ring,8\n"), "samples.csv"),
])
def test_bad_results_give_one_clear_error_naming_the_file(tmp_path, capsys, damage, named):
    folder = write_run(tmp_path / "r", name="r", ranks=(8,), sizes=SIZES)
    damage(folder)
    with pytest.raises(ResultsError) as caught:
        load([folder])
    assert str(folder) in str(caught.value) and named in str(caught.value)
    assert main(["report", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0] and named in err[0]


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    folder = write_run(tmp_path / "r", name="r", ranks=(8,), sizes=SIZES)
    for args, words in ((["--formats", "gif"], "unknown figure format"), (["--baseline", "tree"], "tree"),
                        (["--size", "3M"], "no results of size 3 MiB"), (["--ranks", "5"], "P = 8"),
                        (["--size", "lots"], "cannot read the size")):
        assert main(["report", str(folder), "--out", str(tmp_path / "o"), *args]) == 2
        assert words in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_reports_never_load_mpi_cupy_pyverbs_or_the_simulator():
    code = ("import sys, collbench.reports.build, collbench.reports.cli; "
            "print(sorted(m for m in ('mpi4py', 'cupy', 'pyverbs', 'collbench.sim') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_in_place_and_out_of_place_are_not_mixed(tmp_path):
    folder = write_run(tmp_path / "r", name="r", ranks=(8,), sizes=SIZES, in_place=(False, True))
    out_of_place, in_place = load([folder]), load([folder], in_place=True)
    assert not out_of_place.summary["in_place"].any() and in_place.summary["in_place"].all()
    assert "out-of-place only" in out_of_place.notes[0]
