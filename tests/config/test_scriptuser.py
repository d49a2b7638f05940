"""scripts.user reaches every script check; what has none is not copied."""

from __future__ import annotations

from dataclasses import replace

from healthd.checkspec import ScriptCheck
from healthd.config import parse_text
from healthd.config.scriptuser import with_scripts_user

TEXT = """
scripts: {user: healthd-check}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp}]
    real_servers:
      - {name: a, address: 192.168.1.1}
      - {name: b, address: 192.168.1.2, checks: [{type: script, command: [/bin/true]}]}
  - name: dns
    address: 10.0.0.2
    port: 53
    checks: [{type: tcp}]
    real_servers:
      - {name: c, address: 192.168.1.3}
"""


def test_script_checks_run_as_the_configured_user() -> None:
    web, _ = parse_text(TEXT, "t.yaml").virtual_servers
    (check,) = web.real_servers[1].checks
    assert isinstance(check.spec, ScriptCheck)
    assert check.spec.user == "healthd-check"


def test_what_has_no_script_check_to_change_keeps_its_object() -> None:
    config = parse_text(TEXT, "t.yaml")
    assert with_scripts_user(config) is config  # already applied: nothing to change
    web, dns = config.virtual_servers
    changed = with_scripts_user(replace(config, scripts=replace(config.scripts, user="other")))
    new_web, new_dns = changed.virtual_servers
    assert new_dns is dns
    assert new_web.real_servers[0] is web.real_servers[0]
    spec = new_web.real_servers[1].checks[0].spec
    assert isinstance(spec, ScriptCheck) and spec.user == "other"
