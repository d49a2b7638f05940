"""The check state machine (rise/fall) and the all-checks-must-pass rule, from health.py's table."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthd import health
from healthd.checkspec import CheckTiming
from healthd.model import Health

UP, DOWN, UNKNOWN = Health.UP, Health.DOWN, Health.UNKNOWN
OK, FAIL = True, False


def timing(rise: int = 2, fall: int = 3, initial: Health = UNKNOWN) -> CheckTiming:
    return CheckTiming(rise=rise, fall=fall, initial=initial)


def states(results: Iterable[bool], check: CheckTiming) -> list[Health]:
    """The check's health after each result, starting from its initial state."""
    state = health.initial(check)
    out = []
    for ok in results:
        state = health.step(state, ok, check)
        out.append(state.health)
    return out


# ---- the table, row by row ----------------------------------------------------------------------


@pytest.mark.parametrize("rise", [1, 2, 5])
def test_unknown_then_ok_is_up_at_once(rise: int) -> None:
    assert states([OK], timing(rise=rise)) == [UP]


@pytest.mark.parametrize("fall", [1, 3, 5])
def test_unknown_then_fail_is_down_at_once(fall: int) -> None:
    assert states([FAIL], timing(fall=fall)) == [DOWN]


def test_up_then_ok_stays_up() -> None:
    assert states([OK] * 5, timing(initial=UP)) == [UP] * 5


@pytest.mark.parametrize("fall", [1, 2, 3, 7])
def test_up_stays_up_through_fall_minus_one_failures(fall: int) -> None:
    assert states([FAIL] * fall, timing(fall=fall, initial=UP)) == [UP] * (fall - 1) + [DOWN]


@pytest.mark.parametrize("rise", [1, 2, 3, 7])
def test_down_stays_down_through_rise_minus_one_successes(rise: int) -> None:
    assert states([OK] * rise, timing(rise=rise, initial=DOWN)) == [DOWN] * (rise - 1) + [UP]


def test_down_then_fail_stays_down() -> None:
    assert states([FAIL] * 5, timing(initial=DOWN)) == [DOWN] * 5


def test_success_while_up_resets_failures_so_fall_failures_must_be_consecutive() -> None:
    check = timing(fall=3, initial=UP)
    # Two failures, a success, two failures: never three in a row.
    assert states([FAIL, FAIL, OK, FAIL, FAIL], check) == [UP] * 5
    # The third consecutive one does it.
    assert states([FAIL, FAIL, OK, FAIL, FAIL, FAIL], check)[-1] is DOWN


def test_failure_while_down_resets_successes_so_rise_successes_must_be_consecutive() -> None:
    check = timing(rise=3, initial=DOWN)
    assert states([OK, OK, FAIL, OK, OK], check) == [DOWN] * 5
    assert states([OK, OK, FAIL, OK, OK, OK], check)[-1] is UP


def test_counting_starts_again_after_each_change() -> None:
    check = timing(rise=2, fall=2)
    results = [FAIL, OK, OK, FAIL, FAIL, OK, FAIL, OK, OK]
    assert states(results, check) == [DOWN, DOWN, UP, UP, DOWN, DOWN, DOWN, DOWN, UP]


@pytest.mark.parametrize("start", [UP, DOWN, UNKNOWN])
def test_initial_state_comes_from_timing(start: Health) -> None:
    assert health.initial(timing(initial=start)).health is start


def test_initial_up_needs_fall_failures_and_initial_down_needs_rise_successes() -> None:
    # Unlike UNKNOWN, a configured initial state is not overturned by one result.
    assert states([FAIL, FAIL, FAIL], timing(fall=3, initial=UP)) == [UP, UP, DOWN]
    assert states([OK, OK], timing(rise=2, initial=DOWN)) == [DOWN, UP]


def _documented_table() -> dict[tuple[Health, bool], tuple[str | None, str, Health]]:
    """The rows of the table in health.py's docstring: (state, ok) -> (counts, needs, then)."""
    assert health.__doc__ is not None
    rows: dict[tuple[Health, bool], tuple[str | None, str, Health]] = {}
    for line in health.__doc__.splitlines():
        words = line.split()
        if len(words) >= 5 and words[0] in Health.__members__ and words[1] in ("ok", "fail"):
            counts = None if words[2] == "(reset)" else words[2]
            needs = "1" if words[3] == "-" else words[3]
            rows[(Health[words[0]], words[1] == "ok")] = (counts, needs, Health[words[4]])
    return rows


def test_transition_data_matches_the_documented_table() -> None:
    documented = _documented_table()
    assert len(documented) == 6  # every (state, result) pair is documented
    actual = {k: (t.counts, str(t.needs), t.then) for k, t in health.TRANSITIONS.items()}
    assert actual == documented


# ---- combine: all checks must pass --------------------------------------------------------------


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        pytest.param([UP, UP, UP], UP, id="all-up"),
        pytest.param([UP, DOWN, UP], DOWN, id="one-down"),
        pytest.param([UNKNOWN, DOWN], DOWN, id="down-beats-unknown"),
        pytest.param([DOWN, UNKNOWN], DOWN, id="down-beats-unknown-in-any-order"),
        pytest.param([UP, UNKNOWN], UNKNOWN, id="unknown"),
        pytest.param([UNKNOWN], UNKNOWN, id="only-unknown"),
        pytest.param([], UP, id="no-checks-is-up"),
    ],
)
def test_combine(checks: list[Health], expected: Health) -> None:
    assert health.combine(checks) is expected
    assert health.combine(iter(checks)) is expected  # any iterable, consumed once


# ---- property: changes happen exactly after rise/fall consecutive results ------------------------


def trailing(results: list[bool], end: int, value: bool) -> int:
    """How many results equal to ``value`` end at index ``end`` (inclusive)."""
    count = 0
    for ok in reversed(results[: end + 1]):
        if ok is not value:
            break
        count += 1
    return count


@settings(max_examples=200, deadline=None)
@given(
    results=st.lists(st.booleans(), max_size=60),
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    start=st.sampled_from(list(Health)),
)
def test_changes_only_after_rise_or_fall_consecutive_results(
    results: list[bool], rise: int, fall: int, start: Health
) -> None:
    after = states(results, timing(rise=rise, fall=fall, initial=start))
    before = [start, *after[:-1]]
    for i, ok in enumerate(results):
        assert after[i] is not UNKNOWN  # every result gives a verdict
        if before[i] is UNKNOWN:
            assert i == 0  # UNKNOWN is only ever the initial state...
            assert after[i] is (UP if ok else DOWN)  # ...and the first result decides
            continue
        fails, oks = trailing(results, i, FAIL), trailing(results, i, OK)
        # Never UP with fall failures in a row behind it, never DOWN with rise successes.
        if after[i] is UP:
            assert fails < fall
        else:
            assert oks < rise
        # A change happens only on a result that contradicts the state, after enough of them.
        if after[i] is not before[i]:
            if after[i] is DOWN:
                assert not ok
                assert fails >= fall
            else:
                assert ok
                assert oks >= rise


def test_equal_states_are_one_object() -> None:
    # A probe that confirms the state allocates nothing that outlives it: at thousands of
    # probes per second such objects kept the garbage collector's pauses long and frequent.
    timing = CheckTiming(rise=2, fall=3)
    up = health.step(health.initial(timing), True, timing)
    assert health.step(up, True, timing) is up
    once = health.step(up, False, timing)
    assert once.failures == 1
    assert health.step(health.step(once, True, timing), False, timing) is once
