"""Command line: ``proxyd [run|check|config|routes|why|transparent] [options]``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from proxyd.config import ConfigError, dump_config, load_config
from proxyd.inbound import StartupError

COMMANDS = ("run", "check", "config", "routes", "why", "transparent")
EXIT_CONFIG = 2
EXIT_STARTUP = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyd",
        description="Censorship-aware local forwarding proxy (HTTP proxy + SOCKS5 on one port).",
    )
    sub = parser.add_subparsers(dest="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, help="TOML config file (default: embedded)")
    common.add_argument(
        "--listen", action="append", metavar="HOST:PORT", help="listen address (repeatable)"
    )
    common.add_argument("--admin", metavar="HOST:PORT", help='admin listener ("" disables)')
    common.add_argument(
        "--allow", action="append", metavar="CIDR", help="client network allowed (repeatable)"
    )
    common.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    common.add_argument("--state-dir", metavar="DIR", help="where learned routes are kept")
    sub.add_parser("run", parents=[common], help="run the daemon (the default)")
    sub.add_parser("check", parents=[common], help="validate the config and exit")
    sub.add_parser("config", parents=[common], help="print the effective config as TOML")
    sub.add_parser(
        "routes", help="list, force or forget learned routes (`proxyd routes -h` for more)"
    )
    sub.add_parser("why", help="which route HOST gets and why (`proxyd why HOST [--port N]`)")
    sub.add_parser(
        "transparent",
        help="firewall rules for transparent mode on a router (`proxyd transparent -h`)",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "listen": args.listen,
        "admin": args.admin,
        "allow": args.allow,
        "log_level": args.log_level,
        "state_dir": args.state_dir,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    if argv[0] in ("routes", "why"):
        # Its own parser: actions and arguments of their own, the admin API or the file.
        from proxyd.ops import routes_command

        return routes_command(argv[1:] if argv[0] == "routes" else argv)
    if argv[0] == "transparent":
        from proxyd.ops import transparent_command

        return transparent_command(argv[1:])
    args = _parser().parse_args(argv)
    overrides = _overrides(args)
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as err:
        print(f"proxyd: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        print(f"{args.config or 'embedded defaults'}: OK")
        return 0
    if args.command == "config":
        sys.stdout.write(dump_config(config))
        return 0
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The access log is asked for by its own key, whatever the level of everything else.
    logging.getLogger("proxyd.access").setLevel(logging.INFO)
    from proxyd.daemon import run_daemon

    try:
        return run_daemon(config, args.config, overrides)
    except StartupError as err:
        print(f"proxyd: {err}", file=sys.stderr)
        return EXIT_STARTUP


if __name__ == "__main__":
    sys.exit(main())
