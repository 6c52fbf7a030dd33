"""Length-penalty schedule for ERPO stage 3: lambda_t per kind, the scorer and resumable state."""

from __future__ import annotations

import math

import pytest

from reasonalign.components.length import (
    LengthSchedule,
    LengthScheduler,
    lambda_at,
    length_term,
    score,
)


def test_constant():
    s = LengthSchedule(kind="constant", lambda_start=0.3, lambda_end=0.9, iterations=4)
    assert [lambda_at(s, t) for t in range(1, 5)] == [0.3, 0.3, 0.3, 0.3]


def test_linear_endpoints_and_midpoint():
    s = LengthSchedule(kind="linear", lambda_start=0.1, lambda_end=0.5, iterations=5)
    assert lambda_at(s, 1) == pytest.approx(0.1)
    assert lambda_at(s, 3) == pytest.approx(0.3)
    assert lambda_at(s, 5) == pytest.approx(0.5)
    assert lambda_at(s, 2) == pytest.approx(0.2)
    down = LengthSchedule(kind="linear", lambda_start=0.4, lambda_end=0.0, iterations=3)
    assert [lambda_at(down, t) for t in (1, 2, 3)] == pytest.approx([0.4, 0.2, 0.0])


def test_cosine_endpoints_and_midpoint():
    s = LengthSchedule(kind="cosine", lambda_start=0.0, lambda_end=0.4, iterations=5)
    assert lambda_at(s, 1) == pytest.approx(0.0)
    assert lambda_at(s, 3) == pytest.approx(0.2)
    assert lambda_at(s, 5) == pytest.approx(0.4)
    assert lambda_at(s, 2) == pytest.approx(0.4 * (1 - math.cos(math.pi / 4)) / 2)
    assert lambda_at(s, 2) < 0.1  # slow start, unlike linear


def test_single_iteration_gives_lambda_start():
    for kind in ("constant", "linear", "cosine", "adaptive"):
        s = LengthSchedule(kind=kind, lambda_start=0.25, lambda_end=0.5, iterations=1)
        assert lambda_at(s, 1) == 0.25
        with pytest.raises(ValueError, match="outside 1..1"):
            lambda_at(s, 2)


def test_iteration_out_of_range():
    s = LengthSchedule(iterations=3)
    for t in (0, 4, 1.5):
        with pytest.raises(ValueError, match="outside"):
            lambda_at(s, t)


def test_adaptive_moves_toward_target_and_clips():
    s = LengthSchedule(kind="adaptive", lambda_start=0.2, iterations=10, target_tokens=200,
                       adapt_rate=0.1, lambda_max=0.5)
    assert lambda_at(s, 1) == 0.2
    # too long (300 vs 200: +50%) -> up by 0.05
    assert lambda_at(s, 2, observed_mean_tokens=300, prev_lambda=0.2) == pytest.approx(0.25)
    # too short (100 vs 200: -50%) -> down by 0.05
    assert lambda_at(s, 2, observed_mean_tokens=100, prev_lambda=0.2) == pytest.approx(0.15)
    # on target -> unchanged
    assert lambda_at(s, 2, observed_mean_tokens=200, prev_lambda=0.2) == pytest.approx(0.2)
    # clipped at lambda_max and at 0
    assert lambda_at(s, 3, observed_mean_tokens=2000, prev_lambda=0.45) == 0.5
    assert lambda_at(s, 3, observed_mean_tokens=0, prev_lambda=0.05) == 0.0
    with pytest.raises(ValueError, match="observed_mean_tokens"):
        lambda_at(s, 2)


def test_schedule_validation():
    with pytest.raises(ValueError, match="kind"):
        LengthSchedule(kind="exponential")
    with pytest.raises(ValueError, match="iterations"):
        LengthSchedule(iterations=0)
    with pytest.raises(ValueError, match="lambda_end"):
        LengthSchedule(lambda_end=2.0, lambda_max=1.0)
    with pytest.raises(ValueError, match="length_norm"):
        LengthSchedule(length_norm=0)
    with pytest.raises(ValueError, match="target_tokens"):
        LengthSchedule(kind="adaptive", target_tokens=0)


def test_length_term_and_score():
    s = LengthSchedule(length_norm=256)
    assert length_term(512, s) == 2.0
    assert score(True, 256, 0.25, s) == pytest.approx(0.75)
    assert score(False, 128, 0.25, s) == pytest.approx(-0.125)
    # shorter correct beats longer correct
    assert score(True, 100, 0.1, s) > score(True, 400, 0.1, s)
    # any correct beats any wrong while lambda * length_term < 1
    lam = 0.3
    long_correct = 800  # 0.3 * 800/256 = 0.9375 < 1
    assert lam * length_term(long_correct, s) < 1
    assert score(True, long_correct, lam, s) > score(False, 0, lam, s)
    assert score(True, long_correct, lam, s) > score(False, 10, lam, s)
    # lambda 0: length does not matter
    assert score(True, 10, 0.0, s) == score(True, 1000, 0.0, s) == 1.0
    with pytest.raises(ValueError):
        score(True, -1, 0.1, s)


def test_scheduler_walks_schedule_and_round_trips():
    s = LengthSchedule(kind="adaptive", lambda_start=0.2, iterations=4, target_tokens=200,
                       adapt_rate=0.1, lambda_max=1.0)
    a = LengthScheduler(s)
    assert a.next() == 0.2
    assert a.next(300) == pytest.approx(0.25)
    state = a.state_dict()
    b = LengthScheduler(LengthSchedule(**state["schedule"]))
    b.load_state_dict(state)
    assert (b.t, b.current) == (2, pytest.approx(0.25))
    assert a.next(100) == pytest.approx(b.next(100)) == pytest.approx(0.2)
    assert a.history == b.history
    assert [h["observed_mean_tokens"] for h in a.history] == [300.0, 100.0, None]
    a.next(200)
    with pytest.raises(ValueError, match="exhausted"):
        a.next(200)
    with pytest.raises(ValueError, match="same schedule"):
        LengthScheduler(LengthSchedule(iterations=4)).load_state_dict(state)


def test_scheduler_linear_matches_lambda_at():
    s = LengthSchedule(kind="linear", lambda_start=0.0, lambda_end=0.3, iterations=4)
    sch = LengthScheduler(s)
    assert [sch.next() for _ in range(4)] == pytest.approx([lambda_at(s, t) for t in range(1, 5)])
