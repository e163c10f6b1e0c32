"""Statistics of a point: the numbers every table and figure is made from."""

import numpy as np
import pytest

from collbench.stats import busbw_factor, median_ci, summarise


def test_busbw_is_algbw_times_2_p_minus_1_over_p():
    s = summarise([1000.0] * 10, size_bytes=1_000_000, nranks=8)
    assert s.algbw_GBps == pytest.approx(1.0)
    assert s.busbw_GBps == pytest.approx(2 * 7 / 8)
    assert busbw_factor(1) == 0.0


def test_median_ci_uses_order_statistics_at_95_percent():
    low, high, level = median_ci(np.arange(10.0))
    assert (low, high) == (1.0, 8.0)  # x_(1) and x_(8): coverage 1 - 2*11/1024
    assert level == pytest.approx(1 - 2 * 11 / 1024)


def test_median_ci_with_too_few_samples_is_min_max_with_its_lower_level():
    low, high, level = median_ci([3.0, 1.0, 2.0])
    assert (low, high) == (1.0, 3.0) and level == pytest.approx(0.75)


def test_median_ci_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = sum(lo <= 0.0 <= hi for lo, hi, _ in (median_ci(rng.normal(size=25)) for _ in range(2000)))
    assert 0.94 <= hits / 2000 <= 0.99


def test_summary_statistics():
    s = summarise([1.0, 2.0, 3.0, 4.0, 100.0], 8, 2)
    assert (s.min_us, s.median_us, s.max_us, s.iters) == (1.0, 3.0, 100.0, 5)
    assert s.mean_us == pytest.approx(22.0)
    assert s.cv == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1) / 22.0)
    with pytest.raises(ValueError, match="no timed samples"):
        summarise([], 8, 2)
