"""proxyd's configuration: TOML 1.0 in (stdlib ``tomllib``), frozen dataclasses out, TOML back.

Public API:

- ``DEFAULT_CONFIG``: the embedded defaults, so ``proxyd`` runs with no file (listen
  127.0.0.1:8080, admin 127.0.0.1:9477, upstream ``tor`` at socks5h://127.0.0.1:9050).
- ``load_config(path, *, overrides=None) -> Config``: read a file (``None``: defaults
  only) and apply ``overrides`` (command-line flags) on top.
- ``parse_config(text, *, source) -> Config``.
- ``dump_config(config) -> str``: the effective config as TOML, every key written;
  ``parse_config`` of it gives an equal ``Config``.
- ``ConfigError(source, line, key, message)``: ``str()`` is ``FILE:LINE: key: message``
  (``line`` may be None; ``key`` is dotted with 0-based indexes, ``upstream[1].url``,
  and empty for TOML syntax and IO errors).
- The dataclasses ``Config`` (with ``.upstream(name)``, ``.mirror(name)``,
  ``.tor_upstream``), ``ListenAddress``, ``AuthConfig``, ``Limits``, ``LearningConfig``,
  ``UpstreamConfig`` (``.from_url``), ``RuleConfig``, ``MirrorConfig`` (``.rewrite``).
  Frozen: compare configs with ``==`` to see whether a reload changed anything.

Semantics (``config/proxyd.toml`` documents every key):

- A missing key keeps its default; ``[limits]`` etc. merge key by key. Any
  ``[[upstream]]`` replaces the default ``tor`` upstream; ``upstream = []`` means none.
- Unknown keys, wrong types and bad values are errors, never ignored. Durations are
  strings with a unit ("250ms", "1.5s", "10m", "1h", "2d"); a bare number is refused
  because seconds-or-milliseconds is a guess. Sizes are bytes or "64KiB".
- Safety: a non-loopback ``listen`` or ``admin`` address with an empty ``allow`` is
  refused: an open proxy on a public address gets abused, and the admin API shows
  browsing history.
- Several upstreams may say ``tor = true``; ``.onion`` uses the first (``tor_upstream``).
- ``overrides`` maps dotted keys (``"listen"``, ``"limits.max_connections"``) to values
  as TOML would hold them (None: flag not given, skipped). They are validated like the
  file; their errors carry source ``"command line"`` and no line. A relative
  ``state_dir`` override is taken against the current directory; in a file it must be
  absolute.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxyd.config._durations import format_duration
from proxyd.config._lines import KeyLines
from proxyd.config._schema import (
    AuthConfig,
    Config,
    DnsConfig,
    DohProviderConfig,
    LearningConfig,
    Limits,
    ListenAddress,
    MirrorConfig,
    RuleConfig,
    TransparentConfig,
    UpstreamConfig,
)
from proxyd.config._validate import BUILTIN_ROUTES, KeyPath, SchemaError, read_config
from proxyd.errors import ProxydError

if TYPE_CHECKING:
    import toml

__all__ = [
    "DEFAULT_CONFIG",
    "AuthConfig",
    "Config",
    "ConfigError",
    "DnsConfig",
    "DohProviderConfig",
    "LearningConfig",
    "Limits",
    "ListenAddress",
    "MirrorConfig",
    "RuleConfig",
    "TransparentConfig",
    "UpstreamConfig",
    "dump_config",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG = Config()
DEFAULTS_SOURCE = "<defaults>"
OVERRIDES_SOURCE = "command line"

_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(ProxydError):
    def __init__(self, source: str, line: int | None, key: str, message: str) -> None:
        super().__init__(source, line, key, message)
        self.source = source
        self.line = line
        self.key = key
        self.message = message

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


def load_config(path: Path | None, *, overrides: Mapping[str, object] | None = None) -> Config:
    if path is None:
        return _parse("", DEFAULTS_SOURCE, overrides or {})
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(source, None, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(source, line, "", "not UTF-8 text (TOML files are UTF-8)") from None
    return _parse(text, source, overrides or {})


def parse_config(text: str, *, source: str) -> Config:
    return _parse(text, source, {})


def dump_config(config: Config) -> str:
    # Only `proxyd config` writes TOML: the writer stays out of the daemon's memory.
    import toml

    body = toml.dumps(_to_toml_data(config), encoder=_toml_writer())
    return "# proxyd effective configuration (proxyd config)\n" + body


def _parse(text: str, source: str, overrides: Mapping[str, object]) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(str(exc), source, text) from None
    overridden = _apply_overrides(raw, overrides)
    _anchor_list_paths(raw, Path(source).parent)
    try:
        return _build(raw)
    except SchemaError as exc:
        key = _render_key(exc.path)
        if any(exc.path[: len(path)] == path for path in overridden):
            raise ConfigError(OVERRIDES_SOURCE, None, key, exc.message) from None
        raise ConfigError(source, KeyLines(text).line_of(exc.path), key, exc.message) from None


def _anchor_list_paths(raw: Mapping[str, Any], base: Path) -> None:
    """Relative list paths are relative to the config file, wherever proxyd was started."""
    tables = raw.get("list")
    for table in tables if isinstance(tables, list) else []:
        if isinstance(table, dict) and isinstance(table.get("path"), str) and table["path"]:
            table["path"] = str(base / table["path"])
    dns = raw.get("dns")
    if isinstance(dns, dict) and isinstance(dns.get("poison_csv"), str) and dns["poison_csv"]:
        dns["poison_csv"] = str(base / dns["poison_csv"])


def _build(raw: Mapping[str, Any]) -> Config:
    config = read_config(raw)
    _check_listeners(config, raw)
    _check_transparent(config)
    _check_route_names(config)
    _check_dns(config)
    if config.learning.retest_max < config.learning.retest_initial:
        blame = "retest_max" if "retest_max" in raw.get("learning", {}) else "retest_initial"
        raise SchemaError(("learning", blame), "retest_max is shorter than retest_initial")
    return config


def _check_listeners(config: Config, raw: Mapping[str, Any]) -> None:
    addresses: list[tuple[KeyPath, ListenAddress]] = [
        (("listen", index), address) for index, address in enumerate(config.listen)
    ]
    if not addresses:
        raise SchemaError(("listen",), "at least one address is needed")
    if config.admin is not None:
        addresses.append((("admin",), config.admin))
    addresses += [
        (("transparent", "listen", index), address)
        for index, address in enumerate(config.transparent.listen)
    ]
    seen: dict[ListenAddress, KeyPath] = {}
    for path, address in addresses:
        if address.port and address in seen:
            first = seen[address]
            blame = path if path[0] in raw else first  # the one the user wrote
            message = f"{address} is both {_render_key(first)} and {_render_key(path)}"
            raise SchemaError(blame, message)
        seen[address] = path
        if config.allow or address.is_loopback:
            continue
        # Safety: an open proxy on a public address is abused within hours, and the admin
        # API reveals browsing history. Opening up must be a deliberate allow-list.
        what = "expose the admin API" if path[0] == "admin" else "run as an open proxy"
        raise SchemaError(
            path, f"refusing to {what} on {address}: set allow = [...] to the client networks"
        )


def _check_transparent(config: Config) -> None:
    transparent = config.transparent
    if not transparent.listen:
        return
    if not transparent.ports:
        raise SchemaError(("transparent", "ports"), "at least one port to redirect is needed")
    for index, address in enumerate(transparent.listen):
        if address.port == 0 or address.host == "localhost":
            # The firewall rules name the port and, for TPROXY, the address.
            raise SchemaError(
                ("transparent", "listen", index),
                f"{address}: the firewall rules need a fixed IP address and port",
            )


def _check_route_names(config: Config) -> None:
    named: list[tuple[KeyPath, str]] = [
        (("upstream", index, "name"), upstream.name)
        for index, upstream in enumerate(config.upstreams)
    ]
    named += [
        (("mirror", index, "name"), mirror.name) for index, mirror in enumerate(config.mirrors)
    ]
    seen: set[str] = set()
    for path, name in named:
        if name in seen:
            raise SchemaError(
                path,
                f"duplicate route name {name!r} (upstream and mirror names share one namespace)",
            )
        seen.add(name)
    for index, rule in enumerate(config.rules):
        if rule.route not in seen and rule.route not in BUILTIN_ROUTES:
            known = ", ".join([*BUILTIN_ROUTES, *seen])
            raise SchemaError(
                ("rule", index, "route"), f"no route named {rule.route!r} (known: {known})"
            )
    for index, block_list in enumerate(config.lists):
        if block_list.route is not None and block_list.route not in seen:
            raise SchemaError(
                ("list", index, "route"),
                f"no upstream or mirror named {block_list.route!r} (known: {', '.join(seen)})",
            )


def _check_dns(config: Config) -> None:
    upstreams = {upstream.name for upstream in config.upstreams}
    for index, provider in enumerate(config.dns.doh):
        if provider.via != "direct" and provider.via not in upstreams:
            known = ", ".join(["direct", *upstreams])
            raise SchemaError(
                ("dns", "doh", index, "via"), f"no upstream named {provider.via!r} (known: {known})"
            )
    for index, address in enumerate(config.dns_listen):
        if not config.allow and not address.is_loopback:
            # An open resolver on a public address joins reflection attacks within hours.
            raise SchemaError(
                ("dns_listen", index),
                f"refusing to answer DNS on {address} for anyone: set allow = [...] too",
            )


def _syntax_error(message: str, source: str, text: str) -> ConfigError:
    line = None
    match = _TOML_POSITION.search(message)
    if match is not None:
        message = message[: match.start()]
        if match[1]:
            line = int(match[1])
            message += f" (column {match[2]})"
        else:
            line = text.count("\n") + 1
    return ConfigError(source, line, "", f"invalid TOML: {message}")


def _apply_overrides(raw: dict[str, Any], overrides: Mapping[str, object]) -> list[KeyPath]:
    applied: list[KeyPath] = []
    for dotted, value in overrides.items():
        if value is None:
            continue
        path = tuple(dotted.split("."))
        table = raw
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(OVERRIDES_SOURCE, None, dotted, f"{part} is not a table")
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, tuple):
            value = list(value)
        if path == ("state_dir",) and isinstance(value, str) and value:
            value = os.path.abspath(value)
        table[path[-1]] = value
        applied.append(path)
    return applied


def _render_key(path: KeyPath) -> str:
    """``("upstream", 1, "url")`` -> ``upstream[1].url``; odd names are quoted as in TOML."""
    rendered = ""
    for part in path:
        if isinstance(part, int):
            rendered += f"[{part}]"
            continue
        name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
        rendered += f".{name}" if rendered else name
    return rendered


def _toml_writer() -> toml.TomlEncoder[dict[str, Any]]:
    import toml

    encoder = toml.TomlEncoder(dict)
    encoder.dump_funcs[str] = _basic_string
    return encoder


def _basic_string(text: str) -> str:
    # toml 0.10 mangles "\x" (think regexes) and control characters. JSON's escapes are all
    # valid in a TOML basic string; DEL is the one character TOML wants escaped and JSON not.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _to_toml_data(config: Config) -> dict[str, Any]:
    """Plain TOML data for ``config``; every key is written, defaults included."""
    return {
        "listen": [str(address) for address in config.listen],
        "admin": "" if config.admin is None else str(config.admin),
        "allow": [str(network) for network in config.allow],
        "log_level": config.log_level,
        "access_log": config.access_log,
        "metrics": config.metrics,
        "admin_token": config.admin_token or "",
        "state_dir": "" if config.state_dir is None else str(config.state_dir),
        "via": config.via,
        "protect_local": config.protect_local,
        "auth": _plain_fields(config.auth) | {"users": dict(config.auth.users)},
        "limits": _plain_fields(config.limits),
        "learning": _plain_fields(config.learning) | {"race_after": _race_after(config.learning)},
        "upstream": [
            {
                "name": upstream.name,
                "url": upstream.url,
                "tor": upstream.tor,
                "isolate": upstream.isolate,
                "health_interval": format_duration(upstream.health_interval),
            }
            for upstream in config.upstreams
        ],
        "rule": [
            {key: value for key, value in _plain_fields(rule).items() if value is not None}
            for rule in config.rules
        ],
        "mirror": [
            {
                "name": mirror.name,
                "from": mirror.from_host,
                "to": mirror.to_host,
                "mode": mirror.mode,
                "when": mirror.when,
                "scheme": mirror.scheme,
            }
            for mirror in config.mirrors
        ],
        "dns": _dns_data(config),
        "dns_listen": [str(address) for address in config.dns_listen],
        "list": [
            {"path": str(block_list.path), "format": block_list.format}
            | ({} if block_list.route is None else {"route": block_list.route})
            for block_list in config.lists
        ],
        "transparent": _plain_fields(config.transparent)
        | {"listen": [str(address) for address in config.transparent.listen]},
    }


def _dns_data(config: Config) -> dict[str, Any]:
    dns = config.dns
    data: dict[str, Any] = {
        "doh": [
            {
                "name": provider.name,
                "url": provider.url,
                "bootstrap": list(provider.bootstrap),
                "via": provider.via,
            }
            for provider in dns.doh
        ],
        "timeout": format_duration(dns.timeout),
        "cache_min_ttl": format_duration(dns.cache_min_ttl),
        "cache_max_ttl": format_duration(dns.cache_max_ttl),
        "cache_size": dns.cache_size,
        "poison_addresses": list(dns.poison_addresses),
        "poison_csv": "" if dns.poison_csv is None else str(dns.poison_csv),
        "shared_address_threshold": dns.shared_address_threshold,
    }
    if dns.bogon_networks is not None:
        data["bogon_networks"] = [str(network) for network in dns.bogon_networks]
    return data


def _plain_fields(
    section: AuthConfig | Limits | LearningConfig | RuleConfig | TransparentConfig,
) -> dict[str, Any]:
    return {field.name: _plain(getattr(section, field.name)) for field in fields(section)}


def _race_after(learning: LearningConfig) -> str:
    return "auto" if learning.race_after is None else format_duration(learning.race_after)


def _plain(value: object) -> Any:
    if isinstance(value, float):
        return format_duration(value)
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
