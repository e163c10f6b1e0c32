"""Statistics of a point: the numbers every table and figure is made from."""

import numpy as np
import pytest

from collbench.stats import busbw_factor, ci_order, level_percent, median_ci, summarise


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


@pytest.mark.parametrize(("n", "j", "below"), [
    (1, 0, (1, 2)),        # P(B <= 0) = 1/2: min..max of one sample covers nothing
    (3, 0, (1, 8)),        # 1 - 2/8 = 75%: min..max, short of 95%
    (5, 0, (1, 32)),       # 1 - 2/32 = 93.75%: still short
    (6, 0, (1, 64)),       # 1 - 2/64 = 96.875%: the first n where min..max reaches 95%
    (10, 1, (11, 1024)),   # 1 - 2(1+10)/1024 = 97.85%; j = 2 would give 1 - 2*56/1024 = 89%
    (20, 5, (21700, 2**20)),  # 1+20+190+1140+4845+15504 = 21700 -> 95.86%; j = 6 gives 88%
])
def test_the_order_statistic_and_its_level_follow_the_binomial_formula(n, j, below):
    assert ci_order(n) == (j, pytest.approx(1 - 2 * below[0] / below[1], abs=1e-12))


def test_the_interval_never_overflows_and_matches_scipy_up_to_a_million_samples():
    from scipy.stats import binom

    for n in (1023, 1024, 1075, 2000, 10_000, 123_457, 1_000_000):
        j, level = ci_order(n)
        assert level == pytest.approx(1 - 2 * binom.cdf(j, n, 0.5), abs=1e-9)
        assert level >= 0.95 > 1 - 2 * binom.cdf(j + 1, n, 0.5)  # the narrowest reaching 95%
    low, high, level = median_ci(np.arange(2000.0))
    j, _ = ci_order(2000)
    assert (low, high) == (j, 1999 - j) and 0.95 <= level < 0.96


def test_a_level_is_printed_rounded_down_never_overstated():
    assert [level_percent(x) for x in (0.95, 0.75, 0.9375, 0.978515625, 0.0)] == \
        ["95%", "75%", "93.7%", "97.8%", "0%"]


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
