"""What ships for Prometheus and Grafana, checked with Prometheus's own tool (promtool).

* a live exposition from a running ``healthd run --dry-run`` passes ``promtool check metrics``,
  and its families are exactly those docs/metrics.md documents;
* packaging/prometheus/alerts.yml passes ``promtool check rules`` and its unit tests
  (``promtool test rules``); every alert is tested and has a runbook section;
* every query of packaging/grafana/healthd.json is valid PromQL (``promtool check rules`` on a
  generated file holding each one as a recording rule) and names only real metrics.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from promhelpers import ROOT, Healthd, dashboard_queries, substitute, wait_for

ALERTS = ROOT / "packaging" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "packaging" / "prometheus" / "alerts_test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOK_BASE = "https://github.com/healthd/healthd/blob/main/docs/runbooks.md#"
# Families of the Python client and Prometheus's own that queries may use besides ours.
OTHER_METRICS = {"up", "process_start_time_seconds", "process_resident_memory_bytes"}
OTHER_METRICS |= {"process_cpu_seconds_total", "ALERTS"}


def promtool_run(
    promtool: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def documented_families() -> set[str]:
    return set(re.findall(r"^\| `(healthd_[a-z_]+)` \|", METRICS_DOC.read_text(), re.M))


def exposed_families(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (healthd_[a-z_]+) ", text, re.M))


def test_live_exposition_passes_promtool_and_matches_the_docs(
    promtool: str, healthd: Healthd
) -> None:
    def probed() -> bool:
        samples = re.findall(r"^healthd_check_attempts_total\{.*\} (\S+)$", healthd.metrics(), re.M)
        return len(samples) == 4 and all(float(v) > 0 for v in samples)

    wait_for(probed, 20, "every check to have run")
    text = healthd.metrics()
    done = promtool_run(promtool, "check", "metrics", stdin=text)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == ""
    assert exposed_families(text) == documented_families()
    assert "_created" not in text


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    done = promtool_run(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    done = promtool_run(promtool, "test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_is_unit_tested_and_has_a_runbook_section() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing_tested = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    headings = set(re.findall(r"^## (\w+)$", RUNBOOKS.read_text(), re.M))
    rules = alert_rules()
    assert len(rules) >= 14
    for rule in rules:
        name = rule["alert"]
        assert name in firing_tested, f"{name}: no test in alerts_test.yml sees it fire"
        assert name in headings, f"{name}: no section in docs/runbooks.md"
        annotations = rule["annotations"]
        assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower()
        assert annotations["summary"] and annotations["description"]
        assert rule["labels"]["severity"] in ("critical", "warning")
    assert headings == {rule["alert"] for rule in rules}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (by our naming: healthd_*, and a few others)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\b(healthd_[a-z_]+|process_[a-z_]+|up|ALERTS)\b", without_strings))


def known_series_names() -> set[str]:
    names = set(OTHER_METRICS)
    for family in documented_families():
        names.add(family)
        names.update(f"{family}_{suffix}" for suffix in ("bucket", "count", "sum"))
    return names


def test_alert_rules_use_only_documented_metrics() -> None:
    known = known_series_names()
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} uses unknown metrics {unknown}"


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 30
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(expr)}
        for i, (_, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool_run(promtool, "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
    known = known_series_names()
    for where, expr in queries:
        unknown = metric_names(expr) - known
        assert not unknown, f"{where} uses unknown metrics {unknown}"


def test_the_query_check_catches_invalid_promql(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (a (up)"}]}]}
        )
    )
    assert promtool_run(promtool, "check", "rules", str(path)).returncode != 0


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('rate(healthd_check_attempts_total{job="x"}[5m])', {"healthd_check_attempts_total"}),
        ("histogram_quantile(0.9, sum by (le) (rate(healthd_x_bucket[1m])))", {"healthd_x_bucket"}),
        ('up{job="healthd"} == 0', {"up"}),
    ],
)
def test_metric_names_are_found_in_queries(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
