"""The health book: which probes exist, who shares them, and every check's state.  Pure.

Identical (check spec, target, timing) triples across virtual servers are probed once: their
``ProbeKey`` is the same, and each ``Subscriber`` (virtual server, real server, check name) sees
the shared result.  ``record()`` feeds one probe result through ``health.step`` and returns what
changed, so the shell can log it, count it and poke the reconciler.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from healthd import health
from healthd.checkspec import CheckSpec, CheckTiming, ProbeResult, Target, probe_target
from healthd.config.types import Config
from healthd.health import CheckState
from healthd.model import Health
from healthd.policy import RealServerStatus


@dataclass(frozen=True, slots=True)
class ProbeKey:
    spec: CheckSpec
    target: Target
    timing: CheckTiming
    # Looked up several times per probe (scheduler, book, metrics): hashed once, not per lookup.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.spec, self.target, self.timing)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[ProbeKey], tuple[CheckSpec, Target, CheckTiming]]:
        # Hashes of strings differ between processes: a worker process hashes again.
        return (ProbeKey, (self.spec, self.target, self.timing))

    def describe(self) -> str:
        return self.spec.describe(self.target)


class Subscriber(NamedTuple):
    """A (virtual server, real server, check) that a probe's results count for; a tuple, so it
    is also the metrics' key for that check (no second tuple per check)."""

    virtual_server: str
    real_server: str
    check: str


RealServerId = tuple[str, str]  # (virtual server name, real server name)


class _Counted(Protocol):
    @property
    def last_duration_s(self) -> float: ...


_C = TypeVar("_C", bound=_Counted)

# Entries of the book's journal of status changes kept; half is dropped past it.
JOURNAL_KEPT = 1024


@dataclass(frozen=True, slots=True)
class CheckChange:
    key: ProbeKey
    before: Health
    after: Health
    result: ProbeResult


@dataclass(frozen=True, slots=True)
class RealServerChange:
    real_server: RealServerId
    before: RealServerStatus
    after: RealServerStatus


@dataclass(frozen=True, slots=True)
class Outcome:
    check_change: CheckChange | None = None
    real_server_changes: tuple[RealServerChange, ...] = ()


NO_CHANGE = Outcome()  # what nearly every result brings: one object for all of them


@dataclass
class HealthBook:
    # tuples, not lists: one per probe and one per real server, never appended to after
    # from_config (a list keeps room to grow: ~40 bytes each, 0.8 MB at 10 000 real servers)
    probes: dict[ProbeKey, tuple[Subscriber, ...]] = field(default_factory=dict)
    checks_of: dict[RealServerId, tuple[tuple[str, ProbeKey], ...]] = field(default_factory=dict)
    states: dict[ProbeKey, CheckState] = field(default_factory=dict)
    # The latest result of each probe, kept as the latest result that said something new plus
    # the latest duration: a probe that repeats itself (the steady state) replaces a float, not
    # an object that would age through the garbage collector's generations.  last_result()
    # puts them together.
    _last: dict[ProbeKey, ProbeResult] = field(default_factory=dict)
    _duration_s: dict[ProbeKey, float] = field(default_factory=dict)
    _status: dict[RealServerId, RealServerStatus] = field(default_factory=dict)
    version: int = 0  # counts the changes of status(): a caller can tell it is unchanged
    # (version, real server whose status() entry it changed), oldest first, from the version
    # _journal_floor on: what changed_since() answers (the desired table is patched for a
    # verdict, not built again over every real server)
    _journal: list[tuple[int, RealServerId]] = field(default_factory=list)
    _journal_floor: int = 0

    @classmethod
    def from_config(cls, config: Config) -> HealthBook:
        book = cls()
        probes: dict[ProbeKey, list[Subscriber]] = {}
        for vs in config.virtual_servers:
            for rs, rs_id in zip(vs.real_servers, vs.rs_ids, strict=True):
                checks = []
                for check in rs.checks:
                    key = ProbeKey(
                        check.spec, probe_target(check.spec, vs.target(rs)), check.timing
                    )
                    probes.setdefault(key, []).append(Subscriber(vs.name, rs.name, check.name))
                    checks.append((check.name, key))
                    book.states.setdefault(key, health.initial(check.timing))
                book.checks_of[rs_id] = tuple(checks)
                book._status[rs_id] = book._compute(rs_id)
        book.probes = {key: tuple(subscribers) for key, subscribers in probes.items()}
        return book

    def carry_over(self, new_config: Config) -> HealthBook:
        """A book for a reloaded config that keeps the state of every probe that is unchanged.

        A probe is unchanged when its spec, target and timing are: its check state and last
        result carry over, so an unchanged real server keeps its verdict (a down one stays
        down).  A changed check starts again from its initial state.
        """
        book = HealthBook.from_config(new_config)
        for key in book.states:
            if key in self.states:
                book.states[key] = self.states[key]
                if key in self._last:
                    book._last[key] = self._last[key]
                    book._duration_s[key] = self._duration_s[key]
        for rs_id in book._status:
            book._status[rs_id] = book._compute(rs_id)
        return book

    def status(self) -> Mapping[RealServerId, RealServerStatus]:
        return self._status

    def last_result(self, key: ProbeKey) -> ProbeResult | None:
        """The latest result of this probe, None before its first one."""
        result = self._last.get(key)
        if result is None:
            return None
        duration_s = self._duration_s[key]
        if result.duration_s == duration_s:
            return result
        return dataclasses.replace(result, duration_s=duration_s)

    def settled(self, key: ProbeKey, result: ProbeResult) -> bool:
        """Whether another result like ``result`` (just recorded) would change nothing here but
        the latest duration: its check is confirmed in the health it has, and ``result`` is
        what it last said."""
        state = self.states.get(key)
        last = self._last.get(key)
        return (
            state is not None
            and last is not None
            and last.says_the_same_as(result)
            and health.step(state, result.ok, key.timing) is state
        )

    def note_durations(
        self, counted: Iterable[tuple[ProbeKey, _C]]
    ) -> Iterator[tuple[tuple[Subscriber, ...], _C]]:
        """The latest duration (``last_duration_s``) of probes whose results said nothing new
        (``settled``), counted elsewhere; yields the subscribers of each probe in the book with
        its count (a probe not in it left the config with a reload)."""
        states, durations, probes = self.states, self._duration_s, self.probes
        for key, count in counted:
            if key in states:
                durations[key] = count.last_duration_s
                yield probes[key], count

    def record(self, key: ProbeKey, result: ProbeResult) -> Outcome | None:
        """What this result changed (``NO_CHANGE``: nothing); None for a probe not in the book
        (it left the config with a reload while it ran)."""
        before = self.states.get(key)
        if before is None:
            return None
        after = health.step(before, result.ok, key.timing)
        if after is not before:
            self.states[key] = after
        last = self._last.get(key)
        if last is None or not last.says_the_same_as(result):
            self._last[key] = result
        self._duration_s[key] = result.duration_s
        if after.health is before.health:
            return NO_CHANGE
        change = CheckChange(key, before.health, after.health, result)
        rs_changes = []
        self.version += 1
        for rs_id in dict.fromkeys((s.virtual_server, s.real_server) for s in self.probes[key]):
            old = self._status[rs_id]
            new = self._compute(rs_id)
            if new is old:
                continue
            self._status[rs_id] = new
            self._journal.append((self.version, rs_id))
            if new.health is not old.health:
                rs_changes.append(RealServerChange(rs_id, old, new))
        if len(self._journal) > JOURNAL_KEPT:  # a reader this far behind computes all again
            cut = len(self._journal) // 2
            self._journal_floor = self._journal[cut][0]
            del self._journal[:cut]
        return Outcome(change, tuple(rs_changes))

    def changed_since(self, version: int) -> list[RealServerId] | None:
        """The real servers whose status() entry changed after ``version``, each once; None
        when the book cannot tell (older than what it keeps, or not one of its versions)."""
        if not self._journal_floor <= version <= self.version:
            return None
        start = bisect.bisect_right(self._journal, version, key=lambda entry: entry[0])
        return list(dict.fromkeys(rs_id for _, rs_id in self._journal[start:]))

    def _compute(self, rs_id: RealServerId) -> RealServerStatus:
        checks = self.checks_of[rs_id]
        verdict = health.combine(self.states[key].health for _, key in checks)
        if not checks:
            return _status(Health.UP, "no checks (static)")
        if verdict is Health.UNKNOWN:
            return _status(verdict, "no verdict yet")
        # The reason is the first check that holds the verdict (for DOWN: a failing one).
        for name, key in checks:
            if self.states[key].health is verdict:
                result = self._last.get(key)  # its detail, not its duration
                detail = result.detail if result is not None else f"initial_state {verdict.value}"
                return _status(verdict, f"{name}: {detail}")
        return _status(verdict, "")


@functools.lru_cache(maxsize=4096)
def _status(health: Health, why: str) -> RealServerStatus:
    """Equal statuses are one object: thousands of real servers are "up, tcp: connected"."""
    return RealServerStatus(health, why)
