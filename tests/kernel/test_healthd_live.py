"""healthd against the real kernel: the seed topology, failures, recovery, hand edits.

The witness is ``ipvsadm -Ln`` (never healthd's own view), and real client traffic from the
client namespace across the VIP.  Timings are bounded by fall x interval + timeout + a margin
for TCG (software emulation runs Python 15-40x slower than the host).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from healthd_runner import InProcessDaemon, seed_config, wait_until
from ipvsadm import Ipvsadm
from netns import NatTopology

pytestmark = pytest.mark.kernel

VS = "TCP 10.0.0.1:80"
RS = {"rs1": "192.168.1.101:80", "rs2": "192.168.1.102:80", "rs3": "192.168.1.103:80"}
ROOT = Path(__file__).resolve().parents[2]
# Margin on top of the theoretical bound, for TCG: probe jitter, a reconcile pass, the ipvsadm
# polls (~0.2 s each under emulation).  Measured alone: detection 0.8-0.9 s against 1.3 s of
# theory; with another VM busy on the same 2 host cores we have seen 4.1 s.  The bound catches a
# detection that waits for the periodic pass or a stalled scheduler, not a late probe; the
# measured figures are printed (-rA) and reported in the notes.
MARGIN_S = 4.0
INTERVAL_S, TIMEOUT_S, RISE, FALL = 0.5, 0.3, 2, 2
DETECT_BOUND_S = FALL * INTERVAL_S + TIMEOUT_S + MARGIN_S
RECOVER_BOUND_S = RISE * INTERVAL_S + TIMEOUT_S + MARGIN_S


def weights(ipvsadm: Ipvsadm, vs: str = VS) -> dict[str, int]:
    table = ipvsadm()
    if vs not in table:
        return {}
    return {addr: rs["weight"] for addr, rs in table[vs]["real_servers"].items()}


def all_up(ipvsadm: Ipvsadm) -> bool:
    return weights(ipvsadm) == dict.fromkeys(RS.values(), 1)


def test_seed_config_builds_exactly_the_seed_table_and_traffic_reaches_all(
    nat_topo: NatTopology, ipvsadm: Ipvsadm
) -> None:
    assert ipvsadm() == {}
    config = (ROOT / "etc" / "healthd.yaml").read_text()
    with InProcessDaemon(config) as running:
        running.wait_ready()
        wait_until(lambda: all_up(ipvsadm), 20, "the seed table never reached weight 1")
        table = ipvsadm()
        assert list(table) == [VS]
        assert table[VS]["scheduler"] == "rr"
        assert table[VS]["persistent"] is None
        assert {a: (r["forward"], r["weight"]) for a, r in table[VS]["real_servers"].items()} == {
            a: ("Masq", 1) for a in RS.values()
        }
        answers = nat_topo.request(12)
        assert answers == {"rs1": 4, "rs2": 4, "rs3": 4}
    # Stopping leaves the table as it is (on_stop: keep).
    assert all_up(ipvsadm)


@pytest.mark.parametrize("on_failure", ["inhibit", "remove"])
def test_dead_real_server_leaves_the_pool_in_time_and_comes_back(
    nat_topo: NatTopology, ipvsadm: Ipvsadm, on_failure: str, record_property: object
) -> None:
    with InProcessDaemon(seed_config(on_failure=on_failure)) as running:
        running.wait_ready()
        wait_until(lambda: all_up(ipvsadm), 15, "never all up")
        nat_topo.backend("rs2").kill()
        t0 = time.monotonic()
        if on_failure == "inhibit":
            gone = lambda: weights(ipvsadm).get(RS["rs2"]) == 0  # noqa: E731
        else:
            gone = lambda: RS["rs2"] not in weights(ipvsadm)  # noqa: E731
        wait_until(gone, 30, "the dead real server was never taken out")
        detected = time.monotonic() - t0
        assert detected <= DETECT_BOUND_S, f"detection took {detected:.2f}s"
        assert weights(ipvsadm).get(RS["rs1"]) == 1 and weights(ipvsadm).get(RS["rs3"]) == 1
        answers = nat_topo.request(10)
        assert set(answers) == {"rs1", "rs3"}, answers
        nat_topo.backend("rs2").restart()
        t0 = time.monotonic()
        wait_until(lambda: all_up(ipvsadm), 30, "the restored real server never came back")
        recovered = time.monotonic() - t0
        assert recovered <= RECOVER_BOUND_S, f"recovery took {recovered:.2f}s"
        assert set(nat_topo.request(9)) == {"rs1", "rs2", "rs3"}
        print(
            f"on_failure={on_failure}: detection {detected:.2f}s (bound {DETECT_BOUND_S:.1f}s),"
            f" recovery {recovered:.2f}s (bound {RECOVER_BOUND_S:.1f}s)"
        )


@pytest.mark.parametrize("fault", ["blackhole", "http-503", "body-mismatch"])
def test_other_faults_inhibit_the_real_server_and_it_recovers(
    nat_topo: NatTopology, ipvsadm: Ipvsadm, fault: str
) -> None:
    check = "{type: http, path: /healthz}"
    if fault == "body-mismatch":
        check = "{type: http, path: /healthz, expect_body: '^ok'}"
    rs3 = nat_topo.backend("rs3")
    healthz = rs3.workdir / "www" / "healthz"
    with InProcessDaemon(seed_config(check=check)) as running:
        running.wait_ready()
        wait_until(lambda: all_up(ipvsadm), 15, "never all up")
        t0 = time.monotonic()
        if fault == "blackhole":
            rs3.blackhole()
        elif fault == "http-503":
            rs3.set_health(503)
        else:
            healthz.write_text("maintenance\n")
        wait_until(lambda: weights(ipvsadm).get(RS["rs3"]) == 0, 30, f"{fault} never detected")
        detected = time.monotonic() - t0
        assert detected <= DETECT_BOUND_S, f"{fault}: detection took {detected:.2f}s"
        assert set(nat_topo.request(6)) <= {"rs1", "rs2"}
        if fault == "blackhole":
            rs3.unblackhole()
        elif fault == "http-503":
            rs3.set_health(200)
        else:
            healthz.write_text("ok\n")
        wait_until(lambda: all_up(ipvsadm), 30, f"{fault}: never recovered")


def test_hand_edits_are_repaired_and_foreign_services_left_alone(
    nat_topo: NatTopology, ipvsadm: Ipvsadm
) -> None:
    ipvsadm.restore(
        """
        -A -t 10.0.0.9:8080 -s wlc
        -a -t 10.0.0.9:8080 -r 192.168.1.101:8080 -g -w 7
        -A -u 10.0.0.1:80 -s sh
        """
    )
    foreign_before = {k: v for k, v in ipvsadm().items() if k != VS}
    with InProcessDaemon(seed_config(reconcile_interval="1s")) as running:
        running.wait_ready()
        wait_until(lambda: all_up(ipvsadm), 15, "never all up")
        ipvsadm.run("-e", "-t", "10.0.0.1:80", "-r", RS["rs1"], "-m", "-w", "5")
        ipvsadm.run("-d", "-t", "10.0.0.1:80", "-r", RS["rs2"])
        ipvsadm.run("-a", "-t", "10.0.0.1:80", "-r", "192.168.1.200:80", "-m", "-w", "1")
        ipvsadm.run("-E", "-t", "10.0.0.1:80", "-s", "wlc")
        repaired = wait_until(
            lambda: all_up(ipvsadm) and ipvsadm()[VS]["scheduler"] == "rr",
            10,
            "hand edits were not repaired",
        )
        assert repaired <= 1.0 + MARGIN_S  # within one periodic pass
        assert {k: v for k, v in ipvsadm().items() if k != VS} == foreign_before


def test_dry_run_on_the_live_kernel_changes_nothing(
    nat_topo: NatTopology, ipvsadm: Ipvsadm, caplog: pytest.LogCaptureFixture
) -> None:
    ipvsadm.restore(
        """
        -A -t 10.0.0.1:80 -s wlc
        -a -t 10.0.0.1:80 -r 192.168.1.101:80 -m -w 1
        -a -t 10.0.0.1:80 -r 192.168.1.102:80 -m -w 9
        """
    )
    nat_topo.backend("rs1").kill()
    before = ipvsadm.run("-Ln")
    caplog.set_level(logging.INFO)
    with InProcessDaemon(seed_config(), dry_run=True) as running:
        running.wait_ready()
        wanted = (
            "would edit real server TCP 10.0.0.1:80 -> 192.168.1.101:80 nat weight 0",
            "would edit real server TCP 10.0.0.1:80 -> 192.168.1.102:80 nat weight 1",
        )
        wait_until(
            lambda: all(w in caplog.text for w in wanted),
            20,
            "dry-run never planned the weight changes",
        )
    assert ipvsadm.run("-Ln") == before
    text = caplog.text
    assert "dry-run: would edit virtual server TCP 10.0.0.1:80 scheduler rr" in text
    assert "dry-run: would add real server TCP 10.0.0.1:80 -> 192.168.1.103:80" in text
    assert (
        "dry-run: would edit real server TCP 10.0.0.1:80 -> 192.168.1.102:80 nat weight 1" in text
    )
