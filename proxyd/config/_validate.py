# Over 400 lines: every section's rules in one place, sharing the file/line/key error reporting.
"""Validation of single keys: the plain dict ``tomllib`` returns -> ``Config``.

Private to ``proxyd.config._config``. ``read_config(raw)`` checks every key on its own (type,
range, syntax) and raises ``SchemaError(path, message)`` for the first problem, ``path``
being the key path (``("upstream", 1, "url")``, indexes 0-based); ``proxyd.config._config``
adds the rules across keys and turns paths into file, line and dotted key. Keys absent
from ``raw`` keep the dataclass defaults.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxyd.config._durations import parse_duration, parse_size
from proxyd.config._schema import (
    NAMELESS_ACTIONS,
    SOCKS_SCHEMES,
    TRANSPARENT_MODES,
    AuthConfig,
    Config,
    DnsConfig,
    DohProviderConfig,
    LearningConfig,
    Limits,
    ListConfig,
    ListenAddress,
    MirrorConfig,
    Network,
    RuleConfig,
    TransparentConfig,
    UpstreamConfig,
)
from proxyd.learning import FORMATS, ListError, read_list

KeyPath = tuple[str | int, ...]
Reader = Callable[[Any, KeyPath], Any]

LOG_LEVELS = ("debug", "info", "warning", "error")
BUILTIN_ROUTES = (
    "direct",
    "desync",
    "desync:split",
    "desync:tlsrec",
    "desync:both",
    "desync:hostcase",
    "reject",
    "auto",
)
RULE_MATCHERS = ("host", "domain", "regex", "cidr", "port")
REMOTE_DNS_SCHEMES = frozenset({"socks5h", "socks4a"})

_LISTEN = re.compile(r"\[([^\]]+)\]:([0-9]{1,5})|([^:\[\]]+):([0-9]{1,5})")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_INTERFACE = re.compile(r"[A-Za-z0-9._@-]{1,15}")
_OWNER = re.compile(r"[0-9]+|[a-z_][a-z0-9_-]{0,31}")
_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SchemaError(Exception):
    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


# --- scalar readers: (value, path) -> parsed value, or SchemaError at path ------------


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), "a date/time")


def _typed(value: object, path: KeyPath, expected: type, description: str) -> Any:
    # bool is an int subclass; TOML keeps them apart and so do we.
    if type(value) is not expected:
        raise SchemaError(path, f"expected {description}, got {_kind(value)}")
    return value


def _bool(value: object, path: KeyPath) -> bool:
    return bool(_typed(value, path, bool, "true or false"))


def _str(value: object, path: KeyPath) -> str:
    return str(_typed(value, path, str, "a string"))


def _table(value: object, path: KeyPath) -> dict[str, Any]:
    return dict(_typed(value, path, dict, "a table"))


def _count(minimum: int, maximum: int = 2**31 - 1) -> Reader:
    def read(value: object, path: KeyPath) -> int:
        number = int(_typed(value, path, int, "an integer"))
        if not minimum <= number <= maximum:
            raise SchemaError(path, f"{number} is out of range ({minimum}-{maximum})")
        return number

    return read


def _size(minimum: int) -> Reader:
    def read(value: object, path: KeyPath) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise SchemaError(
                path, f'expected bytes (65536) or a size ("64KiB"), got {_kind(value)}'
            )
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise SchemaError(path, str(exc)) from None
        if size < minimum:
            raise SchemaError(path, f"{size} bytes is below the minimum of {minimum}")
        return size

    return read


def _duration(*, positive: bool) -> Reader:
    def read(value: object, path: KeyPath) -> float:
        if type(value) is not str:
            raise SchemaError(path, f'expected a duration string such as "10s", got {_kind(value)}')
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise SchemaError(path, str(exc)) from None
        if positive and seconds == 0:
            raise SchemaError(path, "must be longer than 0s")
        return seconds

    return read


def _race_after(value: object, path: KeyPath) -> float | None:
    return None if value == "auto" else _duration(positive=True)(value, path)


def _choice(options: tuple[str, ...]) -> Reader:
    def read(value: object, path: KeyPath) -> str:
        word = _str(value, path).lower()
        if word not in options:
            raise SchemaError(path, f"{value!r} is not one of {', '.join(options)}")
        return word

    return read


def _array(item: Reader) -> Reader:
    def read(value: object, path: KeyPath) -> tuple[Any, ...]:
        items = _typed(value, path, list, "an array")
        return tuple(item(element, (*path, index)) for index, element in enumerate(items))

    return read


def _network(value: object, path: KeyPath) -> Network:
    text = _str(value, path)
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        problem = f"invalid CIDR {text!r}: {exc}"
    with contextlib.suppress(ValueError):
        problem += f" (did you mean {str(ipaddress.ip_network(text, strict=False))!r}?)"
    raise SchemaError(path, problem)


def _regex(flags: re.RegexFlag) -> Reader:
    def read(value: object, path: KeyPath) -> re.Pattern[str]:
        text = _str(value, path)
        try:
            return re.compile(text, flags)
        except re.error as exc:
            raise SchemaError(path, f"invalid regex {text!r}: {exc}") from None

    return read


def _fingerprint(value: object, path: KeyPath) -> str:
    text = _str(value, path)
    _regex(re.NOFLAG)(text, path)
    try:
        re.compile(text.encode())  # the body is bytes: detect compiles a bytes twin
    except re.error as exc:
        raise SchemaError(path, f"invalid regex for the body {text!r}: {exc}") from None
    return text


def _listen_address(value: object, path: KeyPath) -> ListenAddress:
    text = _str(value, path)
    match = _LISTEN.fullmatch(text)
    if match is None:
        raise SchemaError(
            path, f'invalid address {text!r}: write host:port or [v6]:port, e.g. "127.0.0.1:8080"'
        )
    bracketed, host, port = match[1], match[1] or match[3], int(match[2] or match[4])
    if port > 65535:
        raise SchemaError(path, f"port {port} is out of range (1-65535, or 0 for any free port)")
    if host == "localhost":
        return ListenAddress(host, port)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise SchemaError(path, f"{host!r} is not an IP address (or localhost)") from None
    if (ip.version == 6) != bool(bracketed):
        raise SchemaError(path, "brackets are for IPv6, and IPv6 needs them: [::1]:8080")
    return ListenAddress(str(ip), port)


def _admin_address(value: object, path: KeyPath) -> ListenAddress | None:
    return None if value == "" else _listen_address(value, path)


def _state_dir(value: object, path: KeyPath) -> Path | None:
    text = _str(value, path)
    if not text:
        return None
    if not Path(text).is_absolute():
        raise SchemaError(path, f"{text!r} is relative; state_dir must be an absolute path")
    return Path(text)


def _token(value: object, path: KeyPath) -> str | None:
    text = _str(value, path)
    if text and (len(text) < 16 or not text.isascii() or not text.isprintable() or " " in text):
        raise SchemaError(path, "use at least 16 printable ASCII characters without spaces")
    return text or None


def _host(value: object, path: KeyPath) -> str:
    text = _str(value, path)
    host = text.lower().removesuffix(".")
    try:
        return str(ipaddress.ip_address(host.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise SchemaError(path, f"{text!r} is not a valid host name") from None
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise SchemaError(path, f"{text!r} is not a valid host name")
    return host


def _domain(value: object, path: KeyPath) -> str:
    text = _str(value, path)
    return _host(text.removeprefix("*.").removeprefix("."), path)


def _mirror_host(value: object, path: KeyPath) -> str:
    text = _str(value, path)
    return "*." + _host(text[2:], path) if text.startswith("*.") else _host(text, path)


def _route_name(value: object, path: KeyPath) -> str:
    name = _str(value, path)
    if name in BUILTIN_ROUTES:
        raise SchemaError(path, f"{name!r} is a built-in route ({', '.join(BUILTIN_ROUTES)})")
    if not _ROUTE_NAME.fullmatch(name):
        raise SchemaError(path, f"{name!r}: a name is letters, digits, '_', '-', '.' (up to 64)")
    return name


def _users(value: object, path: KeyPath) -> tuple[tuple[str, str], ...]:
    users = []
    for user, password in _table(value, path).items():
        here = (*path, user)
        # RFC 7617 forbids ':' and controls; toml 0.10 cannot write a key holding '\'.
        if not user or not user.isprintable() or ":" in user or "\\" in user:
            raise SchemaError(here, "a username is printable text without ':' or '\\'")
        if not _str(password, here) or not password.isprintable():
            raise SchemaError(here, "a password is non-empty printable text")
        if len(user.encode()) > 255 or len(password.encode()) > 255:
            raise SchemaError(here, "longer than 255 bytes, the SOCKS5 limit (RFC 1929)")
        users.append((user, password))
    return tuple(users)


def ooni_dns_addresses(text: str) -> tuple[str, ...]:
    """Forged answers from OONI's ``fingerprints_dns.csv`` (blocking-fingerprints): the
    rows whose ``pattern_type`` is ``full`` and whose ``pattern`` is an address."""
    rows = csv.DictReader(text.splitlines())
    if rows.fieldnames is None or not {"pattern", "pattern_type"} <= set(rows.fieldnames):
        raise ValueError("not OONI's DNS fingerprint CSV (needs pattern and pattern_type columns)")
    found: list[str] = []
    for row in rows:
        pattern = (row.get("pattern") or "").strip()
        if (row.get("pattern_type") or "").strip() == "full" and _is_ip(pattern):
            found.append(str(ipaddress.ip_address(pattern)))
    return tuple(dict.fromkeys(found))


# --- tables ----------------------------------------------------------------------------


def _check_keys(table: Mapping[str, object], known: Collection[str], path: KeyPath) -> None:
    for key in table:
        if key not in known:
            import difflib  # a config error is rare; the daemon need not keep difflib loaded

            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SchemaError((*path, key), f"unknown key{hint}")


def _required(table: Mapping[str, object], key: str, path: KeyPath, what: str) -> Any:
    if key not in table:
        raise SchemaError((*path, key), f"missing: {what}")
    return table[key]


def _section(cls: Callable[..., Any], readers: Mapping[str, Reader]) -> Reader:
    def read(value: object, path: KeyPath) -> Any:
        table = _table(value, path)
        _check_keys(table, readers, path)
        return cls(**{key: readers[key](item, (*path, key)) for key, item in table.items()})

    return read


_POSITIVE = _duration(positive=True)

_AUTH: dict[str, Reader] = {
    "users": _users,
    "max_failures": _count(1),
    "failure_window": _POSITIVE,
}

_LIMITS: dict[str, Reader] = {
    "max_connections": _count(1),
    "max_connections_per_client": _count(1),
    "max_head_bytes": _size(minimum=1),
    "max_headers": _count(1),
    "max_line": _count(1),
    "head_timeout": _POSITIVE,
    "idle_timeout": _POSITIVE,
    "connect_timeout": _POSITIVE,
    "drain_grace": _duration(positive=False),
    "replay_buffer": _size(minimum=0),
}

_LEARNING: dict[str, Reader] = {
    "enabled": _bool,
    "race_after": _race_after,
    "race_min": _duration(positive=False),
    "first_byte_timeout": _POSITIVE,
    "retest_initial": _POSITIVE,
    "retest_max": _POSITIVE,
    "retest_successes": _count(1),
    "weak_threshold": _count(1),
    "weak_window": _POSITIVE,
    "stall_after": _POSITIVE,
    "save_debounce": _duration(positive=False),
    "blockpage_networks": _array(_network),
    "blockpage_fingerprints": _array(_fingerprint),
    "desync": _bool,
    "canaries": _array(_host),
}


def _interface(value: object, path: KeyPath) -> str:
    name = _str(value, path)
    # IFNAMSIZ is 16 with the NUL; the name goes into nft and iptables rules verbatim.
    if not _INTERFACE.fullmatch(name):
        raise SchemaError(path, f"{name!r} is not an interface name (1-15 of A-Z a-z 0-9 . _ - @)")
    return name


def _owner(value: object, path: KeyPath) -> str:
    name = _str(value, path)
    if name and not _OWNER.fullmatch(name):
        raise SchemaError(path, f"{name!r} is not a user name or a numeric uid")
    return name


_TRANSPARENT: dict[str, Reader] = {
    "listen": _array(_listen_address),
    "mode": _choice(TRANSPARENT_MODES),
    "ports": _array(_count(1, 65535)),
    "nameless": _choice(NAMELESS_ACTIONS),
    "name_timeout": _POSITIVE,
    "interfaces": _array(_interface),
    "owner": _owner,
}

_RULE: dict[str, Reader] = {
    "host": _host,
    "domain": _domain,
    "regex": _regex(re.IGNORECASE),
    "cidr": _network,
    "port": _count(1, 65535),
    "route": _str,
}


def _upstream(value: object, path: KeyPath) -> UpstreamConfig:
    table = _table(value, path)
    keys = ("name", "url", "tor", "isolate", "isolate_clients", "health_interval")
    _check_keys(table, keys, path)
    name = _route_name(_required(table, "name", path, "a name for rules to use"), (*path, "name"))
    url = _str(_required(table, "url", path, 'e.g. "socks5h://127.0.0.1:9050"'), (*path, "url"))
    tor = _bool(table.get("tor", False), (*path, "tor"))
    isolate = _bool(table["isolate"], (*path, "isolate")) if "isolate" in table else None
    isolate_clients = _bool(table.get("isolate_clients", False), (*path, "isolate_clients"))
    interval = _POSITIVE(table.get("health_interval", "30s"), (*path, "health_interval"))
    try:
        upstream = UpstreamConfig.from_url(
            name,
            url,
            tor=tor,
            isolate=isolate,
            isolate_clients=isolate_clients,
            health_interval=interval,
        )
    except ValueError as exc:
        raise SchemaError((*path, "url"), str(exc)) from None
    if tor and upstream.scheme not in REMOTE_DNS_SCHEMES:
        # Local resolution cannot reach .onion and leaks every name to the local resolver.
        raise SchemaError(
            (*path, "tor"),
            f"Tor needs socks5h:// or socks4a:// (remote DNS), not {upstream.scheme}://",
        )
    if isolate_clients and not upstream.isolate:
        raise SchemaError(
            (*path, "isolate_clients"),
            "per-client isolation refines per-domain isolation: set isolate = true too",
        )
    if upstream.isolate and upstream.scheme not in SOCKS_SCHEMES:
        raise SchemaError(
            (*path, "isolate"), "isolation works by SOCKS usernames; this upstream is HTTP"
        )
    if upstream.isolate and upstream.username is not None:
        blame = "isolate" if "isolate" in table else "url"
        raise SchemaError(
            (*path, blame),
            "isolation picks the SOCKS username per domain, replacing the user in url: "
            "drop the user from url or set isolate = false",
        )
    return upstream


def _rule(value: object, path: KeyPath) -> RuleConfig:
    table = _table(value, path)
    _check_keys(table, _RULE, path)
    _required(table, "route", path, "direct, reject, auto, an upstream or a mirror name")
    if not any(key in table for key in RULE_MATCHERS):
        raise SchemaError(path, f"a rule needs at least one of {', '.join(RULE_MATCHERS)}")
    return RuleConfig(**{key: _RULE[key](item, (*path, key)) for key, item in table.items()})


def _mirror(value: object, path: KeyPath) -> MirrorConfig:
    table = _table(value, path)
    _check_keys(table, ("name", "from", "to", "mode", "when", "scheme"), path)
    source = _mirror_host(_required(table, "from", path, "the blocked host"), (*path, "from"))
    target = _mirror_host(_required(table, "to", path, "the mirror host"), (*path, "to"))
    if source.startswith("*.") != target.startswith("*."):
        raise SchemaError(
            (*path, "to"), "from and to must both be wildcards (*.example) or both hosts"
        )
    return MirrorConfig(
        name=_route_name(table.get("name", source.removeprefix("*.")), (*path, "name")),
        from_host=source,
        to_host=target,
        mode=_choice(("redirect", "proxy"))(table.get("mode", "redirect"), (*path, "mode")),
        when=_choice(("blocked", "always"))(table.get("when", "blocked"), (*path, "when")),
        scheme=_choice(("http", "https"))(table.get("scheme", "http"), (*path, "scheme")),
    )


def _list(value: object, path: KeyPath) -> ListConfig:
    table = _table(value, path)
    _check_keys(table, ("path", "format", "route"), path)
    file = Path(_str(_required(table, "path", path, "the list file"), (*path, "path")))
    fmt = _choice(FORMATS)(table.get("format", "hostlist"), (*path, "format"))
    route = _route_name(table["route"], (*path, "route")) if "route" in table else None
    try:
        domains = read_list(file, fmt)
    except ListError as exc:
        where = str(file) if exc.line is None else f"{file}:{exc.line}"
        raise SchemaError((*path, "path"), f"{where}: {exc.message}") from None
    return ListConfig(path=file, format=fmt, route=route, domains=domains)


def _ip(value: object, path: KeyPath) -> str:
    text = _str(value, path)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SchemaError(path, f"{text!r} is not an IP address") from None


def _doh(value: object, path: KeyPath) -> DohProviderConfig:
    table = _table(value, path)
    _check_keys(table, ("name", "url", "bootstrap", "via"), path)
    url = _str(
        _required(table, "url", path, 'e.g. "https://dns.example/dns-query"'), (*path, "url")
    )
    parts = urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError:
        raise SchemaError((*path, "url"), f"{url!r} has an invalid port (1-65535)") from None
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise SchemaError((*path, "url"), f"{url!r}: write https://host[:port]/path (RFC 8484)")
    host = _host(parts.hostname, (*path, "url"))
    bootstrap = _array(_ip)(table.get("bootstrap", []), (*path, "bootstrap"))
    literal = _is_ip(host)
    if not bootstrap and not literal:
        # Asking the system resolver for the provider is asking the censor.
        raise SchemaError(
            (*path, "bootstrap"), f'{host} needs its addresses here, e.g. bootstrap = ["192.0.2.1"]'
        )
    via = table.get("via", "direct")
    via = "direct" if via == "direct" else _route_name(via, (*path, "via"))
    return DohProviderConfig(
        name=_route_name(table.get("name", host), (*path, "name")),
        url=url,
        host=host,
        port=port,
        path=parts.path or "/dns-query",
        bootstrap=bootstrap or (host,),
        via=via,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _csv_path(value: object, path: KeyPath) -> Path | None:
    text = _str(value, path)
    return Path(text) if text else None


_DNS: dict[str, Reader] = {
    "doh": _array(_doh),
    "timeout": _POSITIVE,
    "cache_min_ttl": _duration(positive=False),
    "cache_max_ttl": _POSITIVE,
    "cache_size": _count(1),
    "poison_addresses": _array(_ip),
    "poison_csv": _csv_path,
    "bogon_networks": _array(_network),
    "shared_address_threshold": _count(2),
}


def _dns(value: object, path: KeyPath) -> DnsConfig:
    config: DnsConfig = _section(DnsConfig, _DNS)(value, path)
    if config.cache_max_ttl < config.cache_min_ttl:
        raise SchemaError((*path, "cache_max_ttl"), "cache_max_ttl is shorter than cache_min_ttl")
    names = [provider.name for provider in config.doh]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise SchemaError((*path, "doh", index, "name"), f"duplicate DoH provider {name!r}")
    if config.poison_csv is not None:
        try:
            text = config.poison_csv.read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(
                (*path, "poison_csv"), f"{config.poison_csv}: {exc.strerror}"
            ) from None
        try:
            addresses = ooni_dns_addresses(text)
        except ValueError as exc:
            raise SchemaError((*path, "poison_csv"), f"{config.poison_csv}: {exc}") from None
        config = dataclasses.replace(config, poison_from_csv=addresses)
    return config


# TOML key -> (Config field, reader)
_TOP_LEVEL: dict[str, tuple[str, Reader]] = {
    "listen": ("listen", _array(_listen_address)),
    "admin": ("admin", _admin_address),
    "allow": ("allow", _array(_network)),
    "log_level": ("log_level", _choice(LOG_LEVELS)),
    "access_log": ("access_log", _bool),
    "metrics": ("metrics", _bool),
    "admin_token": ("admin_token", _token),
    "state_dir": ("state_dir", _state_dir),
    "via": ("via", _bool),
    "protect_local": ("protect_local", _bool),
    "auth": ("auth", _section(AuthConfig, _AUTH)),
    "limits": ("limits", _section(Limits, _LIMITS)),
    "learning": ("learning", _section(LearningConfig, _LEARNING)),
    "upstream": ("upstreams", _array(_upstream)),
    "rule": ("rules", _array(_rule)),
    "mirror": ("mirrors", _array(_mirror)),
    "list": ("lists", _array(_list)),
    "dns": ("dns", _dns),
    "dns_listen": ("dns_listen", _array(_listen_address)),
    "transparent": ("transparent", _section(TransparentConfig, _TRANSPARENT)),
}


def read_config(raw: Mapping[str, Any]) -> Config:
    """Every key checked on its own; rules across keys are ``proxyd.config._config``'s job."""
    _check_keys(raw, _TOP_LEVEL, ())
    values = {}
    for key, item in raw.items():
        field, read = _TOP_LEVEL[key]
        values[field] = read(item, (key,))
    return Config(**values)
