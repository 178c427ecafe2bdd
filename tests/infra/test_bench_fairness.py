"""The figures of the bench's fairness scenario (tests/bench/fairness.py), on finish times made
up for the purpose: the window where every job runs, each key's share in it, the deadline."""

from __future__ import annotations

import pytest

from tests.bench.fairness import (
    ProgressSample,
    latency_summary,
    polled_shares,
    shares_while_all_run,
    small_job_deadline,
)


def test_the_small_job_deadline_is_three_seconds_or_three_times_idle() -> None:
    assert small_job_deadline(0.18) == 3.0
    assert small_job_deadline(1.5) == 4.5


def test_latency_summary_gives_the_median_and_the_worst() -> None:
    assert latency_summary([0.2, 0.9, 0.3, 0.25]) == {
        "jobs": 4,
        "median_seconds": 0.275,
        "worst_seconds": 0.9,
    }


def test_shares_count_only_what_finished_while_both_jobs_ran() -> None:
    # b is created at 2.0, a's last conversion is at 10.0 and b's at 7.0: the window is
    # [2.0, 7.0]. a's 1.0 (before b existed) and 10.0 (after b ended) are outside it.
    shares = shares_while_all_run(
        {"a": [1.0, 2.0, 3.0, 4.0, 10.0], "b": [2.5, 3.5, 5.0, 6.0, 7.0]},
        {"a": 0.0, "b": 2.0},
    )
    assert (shares.window_start, shares.window_end) == (2.0, 7.0)
    assert shares.conversions == {"a": 3, "b": 5}
    assert shares.shares == {"a": 3 / 8, "b": 5 / 8}
    assert shares.deviation == pytest.approx(0.25)
    assert not shares.holds()


def test_interleaved_conversions_are_an_equal_share() -> None:
    shares = shares_while_all_run(
        {"a": [1.0, 3.0, 5.0, 7.0], "b": [2.0, 4.0, 6.0, 8.0]}, {"a": 0.0, "b": 0.0}
    )
    assert shares.conversions == {"a": 4, "b": 3}  # b's 8.0 comes after a ended
    assert shares.deviation == pytest.approx(1 / 7)
    even = shares_while_all_run({"a": [1.0, 3.0], "b": [2.0, 3.0]}, {"a": 0.0, "b": 0.0})
    assert even.shares == {"a": 0.5, "b": 0.5}
    assert even.holds()


def test_no_conversion_inside_the_window_is_an_error_not_a_share() -> None:
    with pytest.raises(ValueError, match="no conversion finished"):
        shares_while_all_run({"a": [1.0], "b": [9.0]}, {"a": 0.0, "b": 5.0})


def _sample(at: float, a: int, b: int) -> ProgressSample:
    return ProgressSample(at, {"a": a, "b": b}, {"a": 10, "b": 10})


def test_polled_shares_use_the_polls_that_saw_both_jobs_unfinished() -> None:
    samples = [_sample(0.0, 0, 0), _sample(1.0, 3, 1), _sample(2.0, 6, 2), _sample(3.0, 10, 3)]
    shares = polled_shares(samples)
    assert shares is not None
    # The poll at 3.0 saw a finished: the window is the polls at 0.0 to 2.0.
    assert (shares.window_start, shares.window_end) == (0.0, 2.0)
    assert shares.conversions == {"a": 6, "b": 2}
    assert shares.shares == {"a": 0.75, "b": 0.25}


def test_polled_shares_need_two_polls_inside_the_window() -> None:
    assert polled_shares([_sample(0.0, 0, 0), _sample(1.0, 10, 4)]) is None
