"""``healthd run -c FILE [--dry-run]``, ``healthd check-config FILE``, and the operator verbs
(status, drain, maint, ready, weight, reload) that talk to a running daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from healthd import __version__, config, logs, memory, scriptsec
from healthd.control import commands
from healthd.daemon import StartupError
from healthd.daemon import main as daemon_main

DEFAULT_CONFIG = "/etc/healthd/healthd.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healthd",
        description="Health checker for Linux IPVS: probes real servers, keeps IPVS true.",
    )
    parser.add_argument("--version", action="version", version=f"healthd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="probe and plan, log the IPVS operations it would apply, never touch the kernel",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check-config", help="validate a config file (exit 0 if valid)")
    check.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    commands.add_parsers(sub, DEFAULT_CONFIG)
    return parser


def _print_errors(error: config.ConfigError) -> None:
    for issue in error.issues:
        print(issue, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in commands.VERBS:
        return commands.run(args)
    if args.command == "check-config":
        try:
            cfg = config.load(args.file)
        except config.ConfigError as exc:
            _print_errors(exc)
            return 1
        count = sum(len(vs.real_servers) for vs in cfg.virtual_servers)
        print(f"{args.file}: ok ({len(cfg.virtual_servers)} virtual servers, {count} real servers)")
        return 0
    logs.setup(args.log_level)
    memory.keep_large_apart()  # before the config's parse: its large tables come and go
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        _print_errors(exc)
        print(f"healthd: refusing to start: {args.config} is invalid", file=sys.stderr)
        return 1
    # -- script security (scriptsec): refuse programs a non-root user could change --
    insecure = scriptsec.check_config_scripts(cfg)
    if insecure:
        for line in insecure:
            print(line, file=sys.stderr)
        print(
            f"healthd: refusing to start: the programs {args.config} runs are not safe to run"
            " (make them and their directories root-owned and not writable by group or"
            " others; scripts.insecure: true allows them anyway)",
            file=sys.stderr,
        )
        return 1
    # -- end script security --
    try:
        asyncio.run(daemon_main(cfg, dry_run=args.dry_run))
    except StartupError as exc:
        logging.getLogger("healthd").error("cannot start: %s", exc)
        print(f"healthd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
