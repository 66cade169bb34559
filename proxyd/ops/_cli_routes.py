"""``proxyd routes``: list, force and forget learned routes, through the admin API.

While the daemon runs, its in-memory table is the truth and the state file may lag
behind (saves are debounced), so every subcommand talks to the admin API. When nothing
answers there, the state file is read, or edited for the next start.

    proxyd routes [--state direct|blocked] [-q TEXT] [--json]
    proxyd routes set DOMAIN ROUTE        # ROUTE: direct or an upstream name
    proxyd routes forget DOMAIN
    proxyd routes why HOST [--port N]     # also ``proxyd why HOST``: the route and why
    proxyd routes export [--format hostlist|gfwlist|v2fly|pac]   # blocked domains, to stdout
    proxyd routes import FILE [--format hostlist|gfwlist|v2fly]  # seed this box (format guessed)

An import takes each domain with the route its proxyd comment names, or the first
upstream when this box has no such route; known domains keep their entry. Imported
entries are re-tested like list entries.

Common options: ``-c FILE`` (where the admin address and state dir come from),
``--admin HOST:PORT``, ``--state-dir DIR``, ``--token TOKEN`` (default
``$PROXYD_ADMIN_TOKEN``, else the config's ``admin_token``).

Public API: ``routes_command(argv) -> int`` (argv after "routes"; exit status 0 on
success, 1 on failure, 2 on a usage or config error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxyd.config import Config, ConfigError, load_config
from proxyd.learning import (
    SCHEMA_VERSION,
    LearningTable,
    ListError,
    SharedEntry,
    StateFormatError,
    read_shared,
)
from proxyd.ops._export import EXPORT_FORMATS, render_export
from proxyd.outbound import DirectDialer, UpstreamSet
from proxyd.protocol import desync
from proxyd.routing import (
    STATE_FILE,
    LearnedRoutes,
    Router,
    StateError,
    default_state_dir,
    format_table,
    save_state,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
API_TIMEOUT = 10.0


class AdminUnreachable(Exception):
    """Nothing answers on the admin address: the daemon is not running (or has no admin)."""


class CommandFailed(Exception):
    """The API refused (its explanation is the message), or the state file cannot be used."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxyd routes", description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", type=Path, help="TOML config file (default: embedded)")
    parser.add_argument("--admin", metavar="HOST:PORT", help="admin API address")
    parser.add_argument("--state-dir", metavar="DIR", help="state directory (daemon stopped)")
    parser.add_argument("--token", default=os.environ.get("PROXYD_ADMIN_TOKEN"))
    parser.add_argument("--state", choices=("direct", "blocked"), help="only entries in it")
    parser.add_argument("-q", "--query", default="", help="only domains containing TEXT")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument("--port", type=int, default=443, help="destination port (why)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, help="export/import list format")
    parser.add_argument(
        "action",
        nargs="?",
        choices=("list", "set", "forget", "why", "export", "import"),
        default="list",
    )
    parser.add_argument("domain", nargs="?")
    parser.add_argument("route", nargs="?")
    return parser


class AdminClient:
    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url
        self._token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return json.loads(self.fetch(method, path, body))

    def fetch(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=API_TIMEOUT) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as err:
            raise CommandFailed(_error_text(err)) from None
        except (urllib.error.URLError, ConnectionError) as err:
            raise AdminUnreachable(f"no admin API at {self.base_url}: {err}") from None


def _error_text(err: urllib.error.HTTPError) -> str:
    raw = err.read()
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {err.code}: {raw.decode(errors='replace').strip()}"


def _base_url(config: Config) -> str | None:
    if config.admin is None:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.admin.host, config.admin.host)
    return (
        f"http://[{host}]:{config.admin.port}"
        if ":" in host
        else f"http://{host}:{config.admin.port}"
    )


def _print_entries(raw_entries: list[Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(raw_entries, indent=1))
        return
    table = LearningTable()
    table.from_json({"version": SCHEMA_VERSION, "entries": raw_entries})
    sys.stdout.write(format_table(table.snapshot()))


def _shared_file(args: argparse.Namespace) -> list[SharedEntry]:
    if args.format == "pac":
        raise CommandFailed("a PAC file cannot be imported: export a list format")
    try:
        text = Path(args.domain).read_text(encoding="utf-8", errors="replace")
        return read_shared(text, args.format)
    except OSError as err:
        raise CommandFailed(f"{args.domain}: {err.strerror or err}") from None
    except ListError as err:
        where = f"{args.domain}:{err.line}" if err.line else args.domain
        raise CommandFailed(f"{where}: {err.message}") from None


def _print_import(result: dict[str, list[str]]) -> None:
    print(
        f"imported {len(result['imported'])} routes, kept {len(result['kept'])} known, "
        f"refused {len(result['refused'])}"
    )
    for key in result["refused"]:
        print(f"  refused: {key} (not a domain, or no upstream to route it through)")


def _online(client: AdminClient, args: argparse.Namespace) -> None:
    if args.action == "export":
        query = urllib.parse.urlencode({"format": args.format or "hostlist"})
        sys.stdout.write(client.fetch("GET", f"/api/lists/learned.txt?{query}").decode())
        return
    if args.action == "import":
        body = {"entries": [{"key": e.key, "route": e.route} for e in _shared_file(args)]}
        _print_import(client.call("POST", "/api/routes/import", body))
        return
    if args.action == "list":
        query = urllib.parse.urlencode({"state": args.state or "", "q": args.query})
        _print_entries(client.call("GET", f"/api/routes?{query}")["entries"], args.json)
        return
    if args.action == "why":
        query = urllib.parse.urlencode({"host": args.domain, "port": args.port})
        _print_explanation(client.call("GET", f"/api/explain?{query}"), args.json)
        return
    path = "/api/routes/" + urllib.parse.quote(args.domain, safe="")
    if args.action == "set":
        entry = client.call("PUT", path, {"route": args.route})
        print(f"{entry['key']}: {entry['route']} (forced)")
    else:
        print(f"{client.call('DELETE', path)['forgotten']}: forgotten")


def _offline(config: Config, args: argparse.Namespace) -> None:
    """The daemon is not running: read the state file, or edit it for the next start."""
    path = (config.state_dir or default_state_dir()) / STATE_FILE
    table = LearningTable()
    try:
        # Not load_state: a corrupt file is reported and left where it is for the daemon.
        table.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        raise CommandFailed(f"{path}: {err}") from None
    if args.action == "export":
        listen = config.listen[0] if config.listen else None
        proxy = (listen.host, listen.port) if listen else ("127.0.0.1", 8080)
        fmt = args.format or "hostlist"
        sys.stdout.write(render_export(table.snapshot(), fmt, time.time(), proxy))
        return
    if args.action == "import":
        _print_import(_import_offline(table, config, _shared_file(args)))
        save_state(path, table.to_json())
        print(f"saved in {path}; proxyd is not running, it applies at the next start")
        return
    if args.action == "list":
        entries = [
            e
            for e in table.to_json()["entries"]
            if (not args.state or e["state"] == args.state) and args.query in e["key"]
        ]
        _print_entries(entries, args.json)
        return
    if args.action == "why":
        _print_explanation(
            _offline_router(config, table).explain(args.domain, args.port), args.json
        )
        return
    if args.action == "set":
        desync_routes = {"desync", *(s.route for s in desync.Strategy)}
        routes = {"direct", *desync_routes, *(u.name for u in config.upstreams)}
        if args.route not in routes:
            raise CommandFailed(f"route must be one of {', '.join(sorted(routes))}")
        entry = table.force(args.domain, args.route, time.time())
        message = f"{entry.key}: {entry.route} (forced)"
    elif table.forget(args.domain):
        message = f"{args.domain}: forgotten"
    else:
        raise CommandFailed(f"{args.domain} is not in the learned table")
    save_state(path, table.to_json())
    print(f"{message} in {path}; proxyd is not running, it applies at the next start")


def _import_offline(
    table: LearningTable, config: Config, shared: list[SharedEntry]
) -> dict[str, list[str]]:
    names = {"direct", "desync", *(s.route for s in desync.Strategy)}
    names |= {u.name for u in config.upstreams}
    fallback = config.upstreams[0].name if config.upstreams else None
    result: dict[str, list[str]] = {"imported": [], "kept": [], "refused": []}
    now = time.time()
    for entry in shared:
        route = entry.route if entry.route in names else fallback
        if route is None:
            result["refused"].append(entry.key)
        elif table.seed(entry.key, route, now) is None:
            result["kept"].append(entry.key)
        else:
            result["imported"].append(entry.key)
    return result


def _offline_router(config: Config, table: LearningTable) -> Router:
    """The decision the daemon would make with this config and state file."""
    learned = LearnedRoutes(
        config.learning,
        config.state_dir or default_state_dir(),
        connect_timeout=config.limits.connect_timeout,
    )
    learned.table.from_json(table.to_json())
    return Router(config, DirectDialer(), UpstreamSet(config.upstreams), learned)


def _print_explanation(explained: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(explained, indent=1))
        return
    routes = ", ".join(explained["routes"]) or "refused"
    print(f"{explained['host']}:{explained['port']} -> {routes}\n  {explained['why']}")
    if explained.get("gate"):
        print(f"  {explained['gate']}")


def routes_command(argv: Sequence[str]) -> int:
    parser = _parser()
    args = parser.parse_intermixed_args(list(argv))
    if args.action not in ("list", "export") and args.domain is None:
        needs = {"why": "HOST", "import": "FILE"}.get(args.action, "DOMAIN")
        parser.error(f"{args.action} needs a {needs}")
    if args.action == "set" and args.route is None:
        parser.error("set needs a DOMAIN and a ROUTE")
    overrides = {"admin": args.admin, "state_dir": args.state_dir}
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as err:
        print(f"proxyd: {err}", file=sys.stderr)
        return EXIT_USAGE
    base_url = _base_url(config)
    try:
        try:
            if base_url is None:
                raise AdminUnreachable("the admin listener is disabled in the config")
            _online(AdminClient(base_url, args.token or config.admin_token), args)
        except AdminUnreachable as err:
            print(f"proxyd: {err}; using the state file", file=sys.stderr)
            _offline(config, args)
    except (CommandFailed, StateError, StateFormatError) as err:
        print(f"proxyd: {err}", file=sys.stderr)
        return EXIT_FAILED
    return 0
