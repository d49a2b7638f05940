"""The operator verbs of the ``healthd`` command: status, drain, maint, ready, weight, reload."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from healthd import status
from healthd.config import ConfigError, load
from healthd.config.source import parse_duration
from healthd.config.types import ControlConfig
from healthd.control.client import ClientError, request

VERBS = ("status", "drain", "maint", "ready", "weight", "reload")


def add_parsers(sub: Any, default_config: str) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            default=default_config,
            help="read the control socket path from this config",
        )
        p.add_argument("-s", "--socket", help="the control socket (overrides the config)")

    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("virtual_server", help="virtual server name")
        p.add_argument("real_server", help="real server name")

    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ttl", help="return to normal control after this long (30m, 2h)")
        p.add_argument("--reason", default="", help="shown in status, metrics and logs")

    p = sub.add_parser("status", help="every virtual and real server, with health and weights")
    common(p)
    p.add_argument("--json", action="store_true", help="machine-readable")
    p = sub.add_parser("drain", help="weight 0 now; draining until no connection is left")
    common(p)
    target(p)
    options(p)
    p = sub.add_parser("maint", help="out of rotation whatever the checks say")
    common(p)
    target(p)
    options(p)
    p = sub.add_parser("ready", help="back to health-driven control")
    common(p)
    target(p)
    p = sub.add_parser("weight", help="override the configured weight")
    common(p)
    target(p)
    p.add_argument("weight", type=int, help="0..65535")
    options(p)
    p = sub.add_parser("reload", help="reload the config (only the difference is applied)")
    common(p)


def _socket(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    try:
        return load(args.config).control.socket
    except ConfigError:
        return ControlConfig().socket


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ClientError as exc:
        print(f"healthd {args.command}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    path = _socket(args)
    if args.command == "status":
        data = request(path, "GET", "/v1/status")
        print(json.dumps(data, indent=2) if args.json else status.render(data))
        return 0
    if args.command == "reload":
        print(request(path, "POST", "/v1/reload")["message"])
        return 0
    body: dict[str, Any] = {
        "virtual_server": args.virtual_server,
        "real_server": args.real_server,
        "action": args.command,
    }
    if args.command == "weight":
        body["weight"] = args.weight
    if getattr(args, "ttl", None):
        ttl = parse_duration(args.ttl)
        if not ttl:
            raise ClientError(f"invalid --ttl {args.ttl!r} (write e.g. 30m, 2h)")
        body["ttl_s"] = ttl
    if getattr(args, "reason", ""):
        body["reason"] = args.reason
    print(request(path, "POST", "/v1/override", body)["message"])
    return 0
