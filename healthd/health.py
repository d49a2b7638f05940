"""The health state machine, as data: rise/fall per check, and all-checks-must-pass per real server.

Rule: everything that decides a check's health lives in this file.  No clock, no I/O.

``TRANSITIONS[(state, probe_ok)]`` says which consecutive counter the probe result feeds, how many
of them are needed (a CheckTiming attribute, or 1), and the state reached then:

    state     probe  counts       needs   then
    UNKNOWN   ok     successes    1       UP      the first verdict is believed at once
    UNKNOWN   fail   failures     1       DOWN
    UP        ok     (reset)      -       UP
    UP        fail   failures     fall    DOWN    stays UP through fall-1 failures
    DOWN      ok     successes    rise    UP      stays DOWN through rise-1 successes
    DOWN      fail   (reset)      -       DOWN

A check starts in ``CheckTiming.initial`` (UNKNOWN by default; UP is keepalived's default, DOWN
its ``alpha``).  A real server is DOWN if any check is DOWN, else UNKNOWN if any check is UNKNOWN,
else UP; a real server with no checks is UP.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from healthd.checkspec import CheckTiming
from healthd.model import Health

Counter = Literal["successes", "failures"]


@dataclass(frozen=True, slots=True)
class Transition:
    counts: Counter | None  # None: a result that confirms the state resets both counters
    needs: Literal["rise", "fall", 1]
    then: Health


TRANSITIONS: dict[tuple[Health, bool], Transition] = {
    (Health.UNKNOWN, True): Transition("successes", 1, Health.UP),
    (Health.UNKNOWN, False): Transition("failures", 1, Health.DOWN),
    (Health.UP, True): Transition(None, 1, Health.UP),
    (Health.UP, False): Transition("failures", "fall", Health.DOWN),
    (Health.DOWN, True): Transition("successes", "rise", Health.UP),
    (Health.DOWN, False): Transition(None, 1, Health.DOWN),
}


_UP, _DOWN = Health.UP, Health.DOWN


@dataclass(frozen=True, slots=True)
class CheckState:
    health: Health
    successes: int = 0  # consecutive, while they have not yet changed the state
    failures: int = 0


@functools.lru_cache(maxsize=4096)
def _state(health: Health, successes: int = 0, failures: int = 0) -> CheckState:
    # States are values: equal ones are shared, so a probe that confirms a state allocates
    # nothing that outlives it (at 10 000 probes/s, one new object per probe kept the garbage
    # collector busy: pauses of 15-100 ms as they aged into the older generations).
    return CheckState(health, successes, failures)


def initial(timing: CheckTiming) -> CheckState:
    return _state(timing.initial)


def step(state: CheckState, ok: bool, timing: CheckTiming) -> CheckState:
    """The state after one probe result."""
    if (state.health is _UP if ok else state.health is _DOWN) and not (
        state.successes or state.failures
    ):
        return state  # confirmed again (nearly every result): nothing to count
    rule = TRANSITIONS[(state.health, ok)]
    if rule.counts is None:
        return _state(state.health)
    count = (state.successes if rule.counts == "successes" else state.failures) + 1
    needed = 1 if rule.needs == 1 else getattr(timing, rule.needs)
    if count >= needed:
        return _state(rule.then)
    if rule.counts == "successes":
        return _state(state.health, count, 0)
    return _state(state.health, 0, count)


def combine(checks: Iterable[Health]) -> Health:
    """A real server's health from its checks' health."""
    result = Health.UP
    for health in checks:
        if health is Health.DOWN:
            return Health.DOWN
        if health is Health.UNKNOWN:
            result = Health.UNKNOWN
    return result
