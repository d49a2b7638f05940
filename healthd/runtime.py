"""The daemon's changing state: config, health book, overrides, and what a reload is retiring.

Touched only from the event loop.  No I/O here: the daemon saves ``saved_state()`` and feeds the
clock in.  Reload is a diff (``apply_config``): unchanged probes keep their state, removed real
servers and virtual servers are retired gracefully, the rest enters as the config says.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from healthd import policy
from healthd.checkspec import ProbeResult
from healthd.config.types import Config, RealServerConfig, VirtualServerConfig
from healthd.model import (
    Desired,
    Observed,
    OnFailure,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
    VirtualServerSpec,
)
from healthd.overrides import Override, RealServerId, shown_state, unexpired
from healthd.state import HealthBook, Outcome, ProbeKey
from healthd.statefile import SavedState


class UnknownRealServer(LookupError):
    """The named virtual server or real server is not in the configuration."""


@dataclass(frozen=True)
class ReloadSummary:
    added: tuple[RealServerId, ...] = ()
    removed: tuple[RealServerId, ...] = ()
    changed: tuple[RealServerId, ...] = ()  # attributes or checks changed
    probes_started: int = 0
    probes_stopped: int = 0
    virtual_servers_retired: tuple[str, ...] = ()

    def describe(self) -> str:
        def names(items: tuple[RealServerId, ...]) -> str:
            return ", ".join(f"{vs}/{rs}" for vs, rs in items) or "none"

        text = (
            f"added {names(self.added)}; removed {names(self.removed)}; "
            f"changed {names(self.changed)}; probes started {self.probes_started}, "
            f"stopped {self.probes_stopped}"
        )
        if self.virtual_servers_retired:
            text += f"; virtual servers retired: {', '.join(self.virtual_servers_retired)}"
        return text


@dataclass
class Runtime:
    config: Config
    now: float  # unix time of creation (the "since" of every real server)
    overrides: dict[RealServerId, Override] = field(default_factory=dict)
    retired_vs: dict[VirtualServerKey, VirtualServerSpec] = field(default_factory=dict)
    retired_rs: dict[VirtualServerKey, dict[RealServerKey, RealServerSpec]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        self.book = HealthBook.from_config(self.config)
        self.since: dict[RealServerId, float] = dict.fromkeys(self.book.status(), self.now)
        self.last_desired: Desired = {}
        self._desired_for: tuple[Config, HealthBook] | None = None
        self._desired_inputs: tuple[object, ...] | None = None
        self._desired_basis: policy.Basis | None = None
        self._basis_status: dict[RealServerId, policy.RealServerStatus] = {}
        self._desired_version = 0  # the book's version the desired table was computed at
        self._states: dict[RealServerId, str] = {}  # health states, of _states_of's version
        self._states_of: HealthBook | None = None
        self._states_version = 0
        self._indexed: Config | None = None
        self._by_id: dict[RealServerId, tuple[VirtualServerConfig, RealServerConfig]] = {}

    # ---- health --------------------------------------------------------------------------------

    def record(self, key: ProbeKey, result: ProbeResult, now: float) -> Outcome | None:
        """Feed a probe result; None if the probe left the config meanwhile (a reload)."""
        outcome = self.book.record(key, result)
        if outcome is None:
            return None
        for change in outcome.real_server_changes:
            self.since[change.real_server] = now
        return outcome

    def desired(self, now: float) -> Desired:
        """The desired table; last pass's when nothing it depends on changed since.

        The periodic pass (every few seconds) mostly finds nothing new; rebuilding the table for
        10 000 real servers holds the event loop, and every probe due, for ~20 ms.  What it
        depends on: the config, the health verdicts (``book.version``), the overrides in force
        now and what a reload is retiring, compared by value.  When only verdicts changed, the
        entries of the real servers the book says changed are computed again (``patched``).
        """
        active = unexpired(self.overrides, now)
        inputs = (
            self.book.version,
            active,
            dict(self.retired_vs),
            {key: dict(specs) for key, specs in self.retired_rs.items()},
        )
        before = self._desired_for
        same = before is not None and before[0] is self.config and before[1] is self.book
        if same and inputs == self._desired_inputs:
            return self.last_desired
        status = self.book.status()
        was = self._desired_inputs
        changed = self.book.changed_since(self._desired_version) if same else None
        if changed is not None and was is not None and inputs[1:] == was[1:]:
            # only verdicts changed: their entries computed again, the rest kept
            self.last_desired = policy.patched(
                self.last_desired, status, active, changed, self.servers()
            )
            # the basis must say what each entry was computed from: a status that changed
            # back later would otherwise reuse the patched entry as if it were its own
            for rs_id in changed:
                self._basis_status[rs_id] = status[rs_id]
        else:
            self.last_desired = policy.desired(
                self.config,
                status,
                active,
                policy.Retiring(self.retired_vs, self.retired_rs),
                previous=self.last_desired,
                basis=self._desired_basis,  # used only if made from this very config
            )
            self._basis_status = dict(status)
            self._desired_basis = policy.Basis(self.config, self._basis_status, active)
        self._desired_for, self._desired_inputs = (self.config, self.book), inputs
        self._desired_version = self.book.version
        return self.last_desired

    def states(
        self, observed: Observed, now: float, only: Collection[RealServerId] | None = None
    ) -> dict[RealServerId, str]:
        """What an operator sees for each real server (``only``: for these ones)."""
        active = unexpired(self.overrides, now)
        status = self.book.status()  # every configured real server, in config order
        # health, then the few real servers an override shows otherwise (once per pass for
        # every real server: at 10 000 of them a walk per real server held the loop 10-20 ms)
        if only is None:
            out = dict(self._health_states())
        else:  # a health change: its real servers only
            out = {rs_id: status[rs_id].health.value for rs_id in only if rs_id in status}
        index = self.servers()
        for rs_id, override in active.items():
            if rs_id in out:
                vs, rs = index[rs_id]
                have = observed.get(vs.key)
                seen = have.real_servers.get(rs.key) if have is not None else None
                out[rs_id] = shown_state(status[rs_id].health, override, seen)
        return out

    def _health_states(self) -> dict[RealServerId, str]:
        """Every configured real server's health, as a state; kept, and brought up to date with
        the real servers the book says changed (a walk over every one per pass was ~1 ms at
        5 000 real servers on a fast CPU, tens in the test VM)."""
        book = self.book
        changed = book.changed_since(self._states_version) if self._states_of is book else None
        status = book.status()
        if changed is None:
            self._states = {rs_id: st.health.value for rs_id, st in status.items()}
        else:
            for rs_id in changed:
                self._states[rs_id] = status[rs_id].health.value
        self._states_of, self._states_version = book, book.version
        return self._states

    def servers(self) -> dict[RealServerId, tuple[VirtualServerConfig, RealServerConfig]]:
        """(virtual server, real server) names -> their config, for the current config (built
        once per config)."""
        if self._indexed is not self.config:
            self._by_id = {
                rs_id: (vs, rs)
                for vs in self.config.virtual_servers
                for rs, rs_id in zip(vs.real_servers, vs.rs_ids, strict=True)
            }
            self._indexed = self.config
        return self._by_id

    def forget_departed(self, observed: Observed) -> bool:
        """Drop retiring entries that have left the kernel; True if anything was dropped."""
        changed = False
        for key in list(self.retired_vs):
            if key not in observed:
                del self.retired_vs[key]
                changed = True
        for key, real_servers in list(self.retired_rs.items()):
            have = observed.get(key)
            for rs_key in list(real_servers):
                if have is None or rs_key not in have.real_servers:
                    del real_servers[rs_key]
            if not real_servers:
                del self.retired_rs[key]
                changed = True
        return changed

    # ---- overrides -----------------------------------------------------------------------------

    def find(self, vs_name: str, rs_name: str) -> RealServerId:
        vs = next((v for v in self.config.virtual_servers if v.name == vs_name), None)
        if vs is None:
            known = ", ".join(v.name for v in self.config.virtual_servers)
            raise UnknownRealServer(f"unknown virtual server {vs_name!r} (known: {known})")
        if all(rs.name != rs_name for rs in vs.real_servers):
            known = ", ".join(rs.name for rs in vs.real_servers)
            raise UnknownRealServer(
                f"unknown real server {rs_name!r} in virtual server {vs_name!r} (known: {known})"
            )
        return (vs_name, rs_name)

    def set_override(self, vs_name: str, rs_name: str, override: Override | None) -> RealServerId:
        rs_id = self.find(vs_name, rs_name)
        if override is None:
            self.overrides.pop(rs_id, None)
        else:
            self.overrides[rs_id] = override
        return rs_id

    def expire(self, now: float) -> list[tuple[RealServerId, Override]]:
        gone = [(rs, o) for rs, o in self.overrides.items() if rs not in unexpired({rs: o}, now)]
        for rs, _ in gone:
            del self.overrides[rs]
        return gone

    def saved_state(self) -> SavedState:
        return SavedState(dict(self.overrides), list(self.retired_vs))

    def restore(self, saved: SavedState, now: float) -> list[str]:
        """Take saved overrides and retiring virtual servers; returns what was dropped and why."""
        dropped = []
        for (vs, rs), override in saved.overrides.items():
            try:
                self.set_override(vs, rs, override)
            except UnknownRealServer as exc:
                dropped.append(f"override {override.kind.value} for {vs}/{rs}: {exc}")
        for rs_id, override in self.expire(now):
            dropped.append(f"override {override.kind.value} for {rs_id[0]}/{rs_id[1]}: expired")
        configured = {vs.key for vs in self.config.virtual_servers}
        for key in saved.retiring_virtual_servers:
            if key not in configured:
                self.retired_vs[key] = VirtualServerSpec(key)
        return dropped

    # ---- reload --------------------------------------------------------------------------------

    def apply_config(self, new: Config, now: float) -> ReloadSummary:
        """Switch to a validated config, keeping what did not change (see module docstring)."""
        old = self.config
        old_vs = {vs.name: vs for vs in old.virtual_servers}
        new_vs = {vs.name: vs for vs in new.virtual_servers}
        added: list[RealServerId] = []
        removed: list[RealServerId] = []
        changed: list[RealServerId] = []
        for vs in new.virtual_servers:
            before = old_vs.get(vs.name)
            old_rs = {rs.name: rs for rs in before.real_servers} if before else {}
            for rs in vs.real_servers:
                if rs.name not in old_rs:
                    added.append((vs.name, rs.name))
                elif old_rs[rs.name] != rs or (before is not None and before.key != vs.key):
                    changed.append((vs.name, rs.name))
        for vs in old.virtual_servers:
            after = new_vs.get(vs.name)
            names = {rs.name for rs in after.real_servers} if after else set()
            removed.extend((vs.name, rs.name) for rs in vs.real_servers if rs.name not in names)
        retired = self._retire(old, new)
        new_keys = {vs.key for vs in new.virtual_servers}
        for key in new_keys:
            self.retired_vs.pop(key, None)  # configured again: owned normally
        book = self.book.carry_over(new)
        started = len(set(book.probes) - set(self.book.probes))
        stopped = len(set(self.book.probes) - set(book.probes))
        self.book = book
        self.config = new
        self.since = {rs: self.since.get(rs, now) for rs in book.status()}
        for rs_id in added:
            self.since[rs_id] = now
        self.overrides = {rs: o for rs, o in self.overrides.items() if rs in self.since}
        return ReloadSummary(
            tuple(added), tuple(removed), tuple(changed), started, stopped, tuple(retired)
        )

    def _retire(self, old: Config, new: Config) -> list[str]:
        """Mark what leaves the kernel with this reload; returns the retired virtual servers."""
        new_by_key = {vs.key: vs for vs in new.virtual_servers}
        retired = []
        for vs in old.virtual_servers:
            after = new_by_key.get(vs.key)
            if after is None:
                self.retired_vs[vs.key] = vs.spec
                retired.append(vs.name)
                continue
            self._retire_real_servers(vs, after)
        return retired

    def _retire_real_servers(self, before: VirtualServerConfig, after: VirtualServerConfig) -> None:
        if after.on_failure is not OnFailure.INHIBIT:
            return  # remove mode: not in the config any more, deleted by the next pass
        keep = {rs.key for rs in after.real_servers}
        for rs in before.real_servers:
            if rs.key not in keep:
                self.retired_rs.setdefault(after.key, {})[rs.key] = rs.spec()
        for rs_key in keep:  # configured again
            self.retired_rs.get(after.key, {}).pop(rs_key, None)


def overrides_view(runtime: Runtime, now: float) -> Mapping[RealServerId, Override]:
    return unexpired(runtime.overrides, now)
