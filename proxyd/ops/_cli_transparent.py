"""``proxyd transparent``: the router's firewall rules for transparent mode.

    proxyd transparent rules  [--nft|--iptables] [--lan IFACE]... [--owner USER] [--remove]
    proxyd transparent apply  [--nft|--iptables] [--lan IFACE]... [--owner USER]
    proxyd transparent remove [--nft|--iptables] [--lan IFACE]... [--owner USER]

``rules`` prints the shell script (``--remove``: the one that takes them away); ``apply``
and ``remove`` run it with /bin/sh (systemd/proxyd-transparent.service does). ``-c FILE``
is the config the rules are made for; ``--lan`` and ``--owner`` override
``transparent.interfaces`` and ``transparent.owner``.

Public API: ``transparent_command(argv) -> int`` (argv after "transparent"; 0 on
success, 1 when the script failed, 2 on a usage or config error).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from proxyd.config import ConfigError, load_config
from proxyd.ops._transparent_rules import RulesError, apply_script, remove_script, rule_set

EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyd transparent",
        description="Firewall rules sending the LAN's web traffic to proxyd's transparent "
        "listeners (transparent mode on a router).",
    )
    parser.add_argument("action", choices=("rules", "apply", "remove"))
    parser.add_argument("-c", "--config", type=Path, help="TOML config file (default: embedded)")
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument(
        "--nft", dest="backend", action="store_const", const="nft", help="nftables (default)"
    )
    backend.add_argument(
        "--iptables", dest="backend", action="store_const", const="iptables", help="iptables"
    )
    parser.add_argument(
        "--lan", action="append", metavar="IFACE", help="LAN interface (repeatable)"
    )
    parser.add_argument("--owner", metavar="USER", help="the user proxyd runs as")
    parser.add_argument(
        "--remove", action="store_true", help="with rules: print the removal script"
    )
    parser.set_defaults(backend="nft")
    return parser


def transparent_command(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        # Validated like the file, so an interface or user name cannot inject a rule.
        overrides = {"transparent.owner": args.owner, "transparent.interfaces": args.lan}
        rules = rule_set(load_config(args.config, overrides=overrides))
    except (ConfigError, RulesError) as err:
        print(f"proxyd: {err}", file=sys.stderr)
        return EXIT_USAGE
    removing = args.action == "remove" or (args.action == "rules" and args.remove)
    script = remove_script(rules, args.backend) if removing else apply_script(rules, args.backend)
    if args.action == "rules":
        sys.stdout.write(script)
        return 0
    done = subprocess.run(["/bin/sh", "-s"], input=script, text=True, check=False)
    if done.returncode != 0:
        print(f"proxyd: {args.action} failed (exit {done.returncode})", file=sys.stderr)
        return EXIT_FAILED
    return 0
