"""Config: TOML -> frozen dataclasses, errors that name file:line:key, TOML back out."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyd.config._config import (
    DEFAULT_CONFIG,
    ConfigError,
    ListenAddress,
    MirrorConfig,
    UpstreamConfig,
    dump_config,
    load_config,
    parse_config,
)
from proxyd.config._durations import MAX_DURATION, format_duration, parse_duration, parse_size
from proxyd.config._lines import KeyLines

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "proxyd.toml"
# In the example, "#key = ..." and "#[[table]]" (no space) are settings to uncomment.
COMMENTED_SETTING = re.compile(r"(?m)^#(?=[A-Za-z\[])")


def uncommented_example() -> str:
    return COMMENTED_SETTING.sub("", EXAMPLE.read_text())


def error_for(text: str, source: str = "proxyd.toml") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source=source)
    return caught.value


def key_shapes(data: object, prefix: str = "") -> set[str]:
    """Key paths with array indexes as [] and user names collapsed: the schema's shape."""
    shapes = set()
    if isinstance(data, dict) and prefix != "auth.users":
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else key
            shapes |= {path} | key_shapes(value, path)
    elif isinstance(data, list):
        for item in data:
            shapes |= key_shapes(item, prefix + "[]")
    return shapes


# --- the example file ---------------------------------------------------------------------


def test_example_file_sets_every_key_to_its_true_default() -> None:
    assert load_config(EXAMPLE) == DEFAULT_CONFIG


def test_example_file_shows_every_key_of_the_schema() -> None:
    rich = parse_config(uncommented_example(), source=str(EXAMPLE))
    documented = key_shapes(tomllib.loads(uncommented_example()))
    # dump_config writes every key of every table it is given, so its shape is the schema.
    assert key_shapes(tomllib.loads(dump_config(rich))) <= documented
    assert rich.rules and rich.mirrors and rich.auth.users and rich.learning.blockpage_networks


def test_example_with_everything_uncommented_round_trips() -> None:
    rich = parse_config(uncommented_example(), source=str(EXAMPLE))
    assert parse_config(dump_config(rich), source="dump") == rich


# --- defaults -------------------------------------------------------------------------------


def test_no_file_gives_the_documented_defaults() -> None:
    config = load_config(None)
    assert config == DEFAULT_CONFIG == parse_config("", source="empty")
    assert config.listen == (ListenAddress("127.0.0.1", 8080),)
    assert config.admin == ListenAddress("127.0.0.1", 9477)
    assert config.allow == ()
    assert config.learning.enabled and config.learning.race_after is None
    assert config.limits.idle_timeout == 300.0
    tor = config.upstream("tor")
    assert (tor.scheme, tor.host, tor.port, tor.tor, tor.isolate) == (
        "socks5h",
        "127.0.0.1",
        9050,
        True,
        True,
    )


def test_a_partial_table_keeps_the_other_defaults() -> None:
    config = parse_config('[limits]\nhead_timeout = "3s"\n', source="f")
    assert config.limits.head_timeout == 3.0
    assert config.limits.max_connections == DEFAULT_CONFIG.limits.max_connections
    assert config.learning == DEFAULT_CONFIG.learning


def test_any_upstream_table_replaces_the_default_tor_upstream() -> None:
    config = parse_config('[[upstream]]\nname = "vps"\nurl = "http://127.0.0.1:3128"\n', source="f")
    assert [u.name for u in config.upstreams] == ["vps"]
    assert config.tor_upstream is None


def test_an_empty_upstream_array_means_no_upstream() -> None:
    assert parse_config("upstream = []", source="f").upstreams == ()


def test_sizes_accept_bytes_or_units() -> None:
    config = parse_config('[limits]\nmax_head_bytes = "32KiB"\nreplay_buffer = 0\n', source="f")
    assert (config.limits.max_head_bytes, config.limits.replay_buffer) == (32768, 0)


def test_rule_domain_spellings_and_hosts_are_normalised() -> None:
    routes = [
        {"domain": "*.Example.ORG"},
        {"domain": ".example.org"},
        {"domain": "example.org."},
        {"host": "bücher.example"},
        {"host": "[2001:DB8::1]"},
    ]
    text = "".join(
        f'[[rule]]\n{k} = "{v}"\nroute = "direct"\n' for r in routes for k, v in r.items()
    )
    rules = parse_config(text, source="f").rules
    assert [r.domain for r in rules[:3]] == ["example.org"] * 3
    assert [r.host for r in rules[3:]] == ["xn--bcher-kva.example", "2001:db8::1"]


def test_rule_regex_full_matches_hosts_case_insensitively() -> None:
    (rule,) = parse_config('[[rule]]\nregex = "ads?\\\\..*"\nroute = "reject"\n', source="f").rules
    assert rule.regex is not None
    assert rule.regex.fullmatch("AD.example") and not rule.regex.fullmatch("bad.example")


def test_isolation_defaults_to_on_for_tor_only() -> None:
    text = (
        '[[upstream]]\nname = "t"\nurl = "socks5h://127.0.0.1:9050"\ntor = true\n'
        '[[upstream]]\nname = "s"\nurl = "socks5://127.0.0.1:1080"\n'
    )
    config = parse_config(text, source="f")
    assert config.upstream("t").isolate and not config.upstream("s").isolate


def test_per_client_isolation_is_off_by_default_and_refines_domain_isolation() -> None:
    text = (
        '[[upstream]]\nname = "t"\nurl = "socks5h://127.0.0.1:9050"\ntor = true\n'
        "isolate_clients = true\n"
        '[[upstream]]\nname = "u"\nurl = "socks5h://127.0.0.1:9150"\ntor = true\n'
    )
    config = parse_config(text, source="f")
    assert config.upstream("t").isolate_clients and not config.upstream("u").isolate_clients


def test_several_tor_upstreams_are_allowed_and_the_first_serves_onion() -> None:
    text = "".join(
        f'[[upstream]]\nname = "{name}"\nurl = "socks5h://127.0.0.1:{port}"\ntor = true\n'
        for name, port in (("a", 9050), ("b", 9150))
    )
    tor = parse_config(text, source="f").tor_upstream
    assert tor is not None and tor.name == "a"


def test_a_non_loopback_listener_is_fine_with_an_allow_list() -> None:
    text = 'listen = ["0.0.0.0:8080", "[::]:8080"]\nadmin = "[::]:9477"\nallow = ["192.168.1.0/24"]'
    config = parse_config(text, source="f")
    assert [str(a) for a in config.listen] == ["0.0.0.0:8080", "[::]:8080"]
    assert config.allow == (ipaddress.ip_network("192.168.1.0/24"),)


# --- errors name file, line and key ---------------------------------------------------------

TOR = '[[upstream]]\nname = "tor"\nurl = "socks5h://127.0.0.1:9050"\n'  # lines 1-3

ERRORS = [
    # (text, line, key, part of the message)
    (
        TOR + "isolate = false\nisolate_clients = true\n",
        5,
        "upstream[0].isolate_clients",
        "set isolate = true too",
    ),
    ('log_level = "info"\nlisen = ["127.0.0.1:1"]\n', 2, "lisen", "did you mean 'listen'"),
    ("[limits]\nmax_headers = 10\nmax_conections = 1\n", 3, "limits.max_conections", "unknown"),
    (
        TOR + '[[upstream]]\nname = "b"\nhelth_interval = "1s"\n',
        6,
        "upstream[1].helth_interval",
        "did you mean",
    ),
    ("limits.max_conections = 1\n", 1, "limits.max_conections", "unknown key"),
    ("[learning]\nfoo = { bar = 1 }\n", 2, "learning.foo", "unknown key"),
    ('access_log = "yes"\n', 1, "access_log", "expected true or false, got a string"),
    ("metrics = 0\n", 1, "metrics", "expected true or false, got an integer"),
    ('admin_token = "hunter2"\n', 1, "admin_token", "at least 16 printable ASCII"),
    ('listen = "127.0.0.1:8080"\n', 1, "listen", "expected an array, got a string"),
    ('[limits]\n\nmax_connections = "many"\n', 3, "limits.max_connections", "expected an integer"),
    ("[limits]\nmax_headers = true\n", 2, "limits.max_headers", "got a boolean"),
    ("[limits]\nmax_headers = 0\n", 2, "limits.max_headers", "out of range"),
    ('[limits]\nhead_timeout = "abc"\n', 2, "limits.head_timeout", "invalid duration 'abc'"),
    ('[limits]\nhead_timeout = "-1s"\n', 2, "limits.head_timeout", "negative"),
    ('[limits]\nhead_timeout = "10"\n', 2, "limits.head_timeout", "has no unit"),
    ("[limits]\nhead_timeout = 10\n", 2, "limits.head_timeout", 'duration string such as "10s"'),
    ('[limits]\nhead_timeout = "0s"\n', 2, "limits.head_timeout", "longer than 0s"),
    ('[learning]\nretest_max = "400d"\n', 2, "learning.retest_max", "too long"),
    ('[learning]\nrace_after = "soon"\n', 2, "learning.race_after", "invalid duration"),
    ('[limits]\nmax_head_bytes = "64 parsecs"\n', 2, "limits.max_head_bytes", "unknown unit"),
    ('[limits]\nreplay_buffer = "0.3KiB"\n', 2, "limits.replay_buffer", "whole number of bytes"),
    ('listen = ["localhost"]\n', 1, "listen[0]", "invalid address 'localhost'"),
    ('listen = ["example.com:80"]\n', 1, "listen[0]", "not an IP address"),
    ('listen = ["::1:8080"]\n', 1, "listen[0]", "invalid address"),
    ('listen = ["[127.0.0.1]:80"]\n', 1, "listen[0]", "brackets are for IPv6"),
    ('listen = [\n  "127.0.0.1:8080",\n  "127.0.0.1:65536",\n]\n', 3, "listen[1]", "out of range"),
    ('admin = "127.0.0.1:99999"\n', 1, "admin", "port 99999 is out of range"),
    ("listen = []\n", 1, "listen", "at least one address"),
    ('listen = ["127.0.0.1:9477"]\n', 1, "listen[0]", "is both listen[0] and admin"),
    (
        'listen = ["127.0.0.1:1", "127.0.0.1:1"]\n',
        1,
        "listen[1]",
        "is both listen[0] and listen[1]",
    ),
    ('allow = ["10.0.0.1/8"]\n', 1, "allow[0]", "did you mean '10.0.0.0/8'"),
    ('allow = ["10.0.0.0/8", "10.0.0.0/33"]\n', 1, "allow[1]", "invalid CIDR"),
    (
        '[learning]\nblockpage_networks = ["nonsense"]\n',
        2,
        "learning.blockpage_networks[0]",
        "CIDR",
    ),
    (
        '[learning]\nblockpage_fingerprints = ["(unclosed"]\n',
        2,
        "learning.blockpage_fingerprints[0]",
        "invalid regex",
    ),
    (
        '[learning]\ncanaries = ["ok.example", "bad host"]\n',
        2,
        "learning.canaries[1]",
        "not a valid host name",
    ),
    ('[learning]\ncanaries = "ok.example"\n', 2, "learning.canaries", "expected an array"),
    ('[[rule]]\nregex = "a[b"\nroute = "direct"\n', 2, "rule[0].regex", "invalid regex"),
    ('[[rule]]\ncidr = "1.2.3.0/8"\nroute = "direct"\n', 2, "rule[0].cidr", "did you mean"),
    ('[[rule]]\nport = 0\nroute = "direct"\n', 2, "rule[0].port", "out of range (1-65535)"),
    ('[[rule]]\nhost = "bad host"\nroute = "direct"\n', 2, "rule[0].host", "not a valid host name"),
    (
        '[[upstream]]\nname = "a"\nurl = "ftp://127.0.0.1:21"\n',
        3,
        "upstream[0].url",
        "unsupported scheme 'ftp://'",
    ),
    (
        '[[upstream]]\nname = "a"\nurl = "socks5h://127.0.0.1:70000"\n',
        3,
        "upstream[0].url",
        "invalid port",
    ),
    (
        '[[upstream]]\nname = "a"\nurl = "socks5h://127.0.0.1"\n',
        3,
        "upstream[0].url",
        "needs a host and a port",
    ),
    ('[[upstream]]\nname = "a"\nurl = "127.0.0.1:9050"\n', 3, "upstream[0].url", "not a URL"),
    (
        '[[upstream]]\nname = "a"\nurl = "http://127.0.0.1:1/x"\n',
        3,
        "upstream[0].url",
        "after host:port",
    ),
    (
        '[[upstream]]\nname = "a"\nurl = "socks4a://u:p@127.0.0.1:1"\n',
        3,
        "upstream[0].url",
        "SOCKS4 has no password",
    ),
    ('\n[[upstream]]\nname = "a"\n', 2, "upstream[0].url", "missing"),
    (
        '[[upstream]]\nname = "direct"\nurl = "http://127.0.0.1:1"\n',
        2,
        "upstream[0].name",
        "built-in route",
    ),
    (
        TOR + '[[upstream]]\nurl = "http://127.0.0.1:1"\nname = "tor"\n',
        6,
        "upstream[1].name",
        "duplicate route name 'tor'",
    ),
    (
        TOR + '[[mirror]]\nname = "tor"\nfrom = "a.example"\nto = "b.example"\n',
        5,
        "mirror[0].name",
        "duplicate",
    ),
    (
        TOR + '[[mirror]]\nfrom = "tor"\nto = "b.example"\n',
        4,
        "mirror[0].name",
        "duplicate route name 'tor'",
    ),
    (
        TOR + 'tor = true\n[[upstream]]\nname = "h"\nurl = "http://127.0.0.1:1"\ntor = true\n',
        8,
        "upstream[1].tor",
        "Tor needs socks5h:// or socks4a://",
    ),
    (
        '[[upstream]]\nname = "t"\nurl = "socks5://127.0.0.1:9050"\ntor = true\n',
        4,
        "upstream[0].tor",
        "(remote DNS), not socks5://",
    ),
    (
        '[[upstream]]\nname = "h"\nurl = "http://127.0.0.1:1"\nisolate = true\n',
        4,
        "upstream[0].isolate",
        "isolation works by SOCKS",
    ),
    (
        '[[upstream]]\nname = "t"\nurl = "socks5h://u:p@127.0.0.1:1"\ntor = true\n',
        3,
        "upstream[0].url",
        "drop the user",
    ),
    (
        TOR + '[[rule]]\ndomain = "example.org"\nroute = "tr"\n',
        6,
        "rule[0].route",
        "no route named 'tr'",
    ),
    (
        '[[rule]]\nport = 1\nroute = "direct"\n\n[[rule]]\nport = 443\n',
        5,
        "rule[1].route",
        "missing",
    ),
    ('[[rule]]\nroute = "direct"\n', 1, "rule[0]", "at least one of host, domain"),
    (
        '[[mirror]]\nfrom = "*.a.example"\nto = "b.example"\n',
        3,
        "mirror[0].to",
        "both be wildcards",
    ),
    (
        '[[mirror]]\nfrom = "a.example"\nto = "b.example"\nmode = "copy"\n',
        4,
        "mirror[0].mode",
        "not one of redirect, proxy",
    ),
    ('log_level = "verbose"\n', 1, "log_level", "not one of debug, info, warning, error"),
    ('state_dir = "state"\n', 1, "state_dir", "absolute path"),
    ('[auth]\nusers = { "a:b" = "pw" }\n', 2, 'auth.users."a:b"', "without ':'"),
    ('[auth.users]\nalice = "ok"\nbob = ""\n', 3, "auth.users.bob", "non-empty printable"),
    (
        '[learning]\nretest_initial = "48h"\n',
        2,
        "learning.retest_initial",
        "shorter than retest_initial",
    ),
    ('[upstream]\nname = "a"\n', 1, "upstream", "expected an array, got a table"),
    # The line scanner must not take text inside strings for headers or keys.
    (
        'state_dir = """/x\n[[rule]] \\"""\nport = 1""""\n[[rule]]\nport = 80\nroute = "nowhere"\n',
        6,
        "rule[0].route",
        "no route named 'nowhere'",
    ),
    ('[auth.users]\nalice = "a"\n"bob.smith" = ""\n', 3, 'auth.users."bob.smith"', "non-empty"),
]


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")  # "[[rule]]" as a regex
@pytest.mark.parametrize(("text", "line", "key", "fragment"), ERRORS)
def test_error_names_file_line_and_key(
    text: str, line: int | None, key: str, fragment: str
) -> None:
    error = error_for(text)
    assert (error.source, error.line, error.key) == ("proxyd.toml", line, key)
    assert fragment in error.message
    where = "proxyd.toml" if line is None else f"proxyd.toml:{line}"
    assert str(error) == f"{where}: {key}: {error.message}"


def test_line_scanner_skips_every_kind_of_string() -> None:
    fake = "[[t]]\nx = 1"  # a header and a key, as they look in the text
    text = "\n".join(
        [
            'basic = "[[t]] \\" x = 1"',
            "literal = '[[t]] x = 1'",
            f'multi = """\n{fake}\n\\""" x = 2 """"',
            f"multi_literal = '''\n{fake}'''",
            'array = [\n  "[[t]]",\n  { "x.y" = [1, 2] },  # [[t]]\n]',
            "[[t]]",
            "[[t]]",
            "x = 1",
        ]
    )
    tomllib.loads(text)  # valid TOML, the scanner's precondition
    lines = KeyLines(text)
    assert lines.line_of(("multi_literal",)) == 7
    assert lines.line_of(("array", 1, "x.y", 1)) == 12
    assert lines.line_of(("t", 1, "x")) == 16
    assert lines.line_of(("t", 1, "missing")) == 15


def test_line_scanner_finds_every_key_of_the_example() -> None:
    text = uncommented_example()
    lines = KeyLines(text).line_of
    text_lines = text.splitlines()

    def leaves(data: object, path: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
        if isinstance(data, dict):
            return [p for key, value in data.items() for p in leaves(value, (*path, key))]
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return [p for index, item in enumerate(data) for p in leaves(item, (*path, index))]
        return [path]

    for path in leaves(tomllib.loads(text), ()):
        line = lines(path)
        assert line is not None and str(path[-1]) in text_lines[line - 1], path


def test_open_proxy_on_a_public_address_is_refused_with_the_reason() -> None:
    error = error_for('log_level = "info"\nlisten = ["127.0.0.1:8080", "0.0.0.0:8080"]\n')
    assert str(error) == (
        "proxyd.toml:2: listen[1]: refusing to run as an open proxy on 0.0.0.0:8080: "
        "set allow = [...] to the client networks"
    )


def test_public_admin_api_without_allow_list_is_refused() -> None:
    error = error_for('\nadmin = "[::]:9477"\n')
    assert (error.line, error.key) == (2, "admin")
    assert error.message.startswith("refusing to expose the admin API on [::]:9477")


def test_toml_syntax_error_keeps_the_line_tomllib_found() -> None:
    error = error_for('listen = ["127.0.0.1:8080"]\n\nvia = tru\n')
    assert (error.line, error.key) == (3, "")
    assert str(error).startswith("proxyd.toml:3: invalid TOML: ")


def test_duplicate_key_is_a_syntax_error_with_its_line() -> None:
    assert error_for("via = true\nvia = false\n").line == 2


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert (caught.value.source, caught.value.line) == (str(missing), None)
    assert "cannot read" in str(caught.value)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"via = false\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:2: not UTF-8")


def test_errors_from_a_real_file_name_its_path(tmp_path: Path) -> None:
    path = tmp_path / "proxyd.toml"
    path.write_text('[limits]\nidle_timeout = "forever"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:2: limits.idle_timeout: invalid duration")


# --- overrides ------------------------------------------------------------------------------


def test_overrides_apply_on_top_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "proxyd.toml"
    path.write_text('listen = ["127.0.0.1:8080"]\nlog_level = "warning"\n')
    config = load_config(
        path,
        overrides={
            "listen": ["0.0.0.0:3128"],
            "admin": "",
            "allow": ("10.0.0.0/8",),
            "log_level": "debug",
            "state_dir": tmp_path,
            "limits.max_connections": 10,
            "access_log": None,  # a flag not given
        },
    )
    assert config.listen == (ListenAddress("0.0.0.0", 3128),)
    assert config.admin is None
    assert config.allow == (ipaddress.ip_network("10.0.0.0/8"),)
    assert config.log_level == "debug"
    assert config.state_dir == tmp_path
    assert config.limits.max_connections == 10
    assert config.access_log is False


def test_relative_state_dir_override_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None, overrides={"state_dir": "state"}).state_dir == tmp_path / "state"


def test_bad_override_names_the_command_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides={"listen": ["127.0.0.1:80", "nonsense"]})
    assert str(caught.value).startswith("command line: listen[1]: invalid address 'nonsense'")


def test_open_proxy_by_override_is_refused_and_blames_the_override(tmp_path: Path) -> None:
    path = tmp_path / "proxyd.toml"
    path.write_text('log_level = "info"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides={"listen": ["0.0.0.0:8080"]})
    error = caught.value
    assert (error.source, error.line, error.key) == ("command line", None, "listen[0]")
    assert "open proxy" in error.message


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides={"log_levle": "debug"})
    assert str(caught.value) == "command line: log_levle: unknown key (did you mean 'log_level'?)"


# --- dump and round trip --------------------------------------------------------------------


def test_dump_of_defaults_is_toml_that_loads_back_equal() -> None:
    text = dump_config(DEFAULT_CONFIG)
    assert tomllib.loads(text)["upstream"][0]["url"] == "socks5h://127.0.0.1:9050"
    assert parse_config(text, source="dump") == DEFAULT_CONFIG


def test_dump_keeps_strings_the_toml_package_would_mangle() -> None:
    # toml 0.10's own string writer turns "\x41" into "\u0041" and drops control chars.
    text = (
        "[learning]\n"
        "blockpage_fingerprints = ['\\x41\\d+', '\\\\x', \"tab\\there\", \"del\\u007f\"]\n"
        '[auth.users]\n"it\'s" = "p\\"w\'x41"\n'
    )
    config = parse_config(text, source="f")
    assert config.learning.blockpage_fingerprints == ("\\x41\\d+", "\\\\x", "tab\there", "del\x7f")
    assert parse_config(dump_config(config), source="dump") == config


@settings(max_examples=50, deadline=None)
@given(
    timeouts=st.lists(st.floats(min_value=0.001, max_value=MAX_DURATION), min_size=4, max_size=4),
    username=st.text(
        st.characters(codec="utf-8", exclude_characters=":\\"), min_size=1, max_size=20
    ).filter(str.isprintable),
    password=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(str.isprintable),
    fingerprint=st.text(
        st.characters(codec="utf-8", exclude_characters="\\[]()*+?{}|^$."), max_size=20
    ),
)
def test_any_valid_config_survives_dump_and_reload(
    timeouts: list[float], username: str, password: str, fingerprint: str
) -> None:
    # The toml package writes table keys (user names) itself; the schema keeps to names
    # it writes correctly.
    head, idle, connect, drain = timeouts
    config = dataclasses.replace(
        DEFAULT_CONFIG,
        limits=dataclasses.replace(
            DEFAULT_CONFIG.limits,
            head_timeout=head,
            idle_timeout=idle,
            connect_timeout=connect,
            drain_grace=drain,
        ),
        learning=dataclasses.replace(
            DEFAULT_CONFIG.learning, race_after=head, blockpage_fingerprints=(fingerprint,)
        ),
        auth=dataclasses.replace(DEFAULT_CONFIG.auth, users=((username, password),)),
    )
    assert parse_config(dump_config(config), source="dump") == config


# --- durations and sizes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1.5s", 1.5),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
    ],
)
def test_duration_spellings(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "-1s", "10", "", "1e3s", "1.s", " 1s", "1 s", "1w"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@settings(max_examples=200)
@given(st.floats(min_value=0, max_value=MAX_DURATION))
def test_formatted_durations_parse_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0, "0s"), (0.3, "300ms"), (1.5, "1.5s"), (90.0, "90s"), (3600.0, "1h")]
)
def test_durations_are_written_the_way_people_write_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "size"),
    [(65536, 65536), ("64KiB", 65536), ("1MiB", 1 << 20), ("64kb", 64000), ("1.5KiB", 1536)],
)
def test_size_spellings(value: int | str, size: int) -> None:
    assert parse_size(value) == size


# --- the dataclasses ------------------------------------------------------------------------


def test_config_is_frozen_and_compares_by_value() -> None:
    text = uncommented_example()
    first, second = (parse_config(text, source=str(EXAMPLE)) for _ in range(2))
    assert first == second and hash(first) == hash(second)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.log_level = "debug"  # type: ignore[misc]


def test_upstream_lookup_by_name() -> None:
    assert DEFAULT_CONFIG.upstream("tor").port == 9050
    with pytest.raises(KeyError):
        DEFAULT_CONFIG.upstream("nope")


def test_upstream_url_credentials_are_percent_decoded() -> None:
    upstream = UpstreamConfig.from_url("v", "SOCKS5H://us%40er:p%3Ass@[::1]:1080")
    assert (upstream.scheme, upstream.host, upstream.port) == ("socks5h", "::1", 1080)
    assert (upstream.username, upstream.password) == ("us@er", "p:ss")
    assert not upstream.isolate


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("localhost", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.1", False),
    ],
)
def test_listen_address_loopback(host: str, loopback: bool) -> None:
    assert ListenAddress(host, 1).is_loopback is loopback


def test_mirror_rewrite_keeps_subdomain_labels() -> None:
    config = parse_config('[[mirror]]\nfrom = "*.blog.example"\nto = "*.m.example"\n', source="f")
    mirror = config.mirror("blog.example")  # name derived from `from`
    assert mirror.rewrite("www.blog.example") == "www.m.example"
    assert mirror.rewrite("blog.example") == "m.example"
    assert mirror.rewrite("notblog.example") is None
    exact = MirrorConfig(name="x", from_host="a.example", to_host="b.example")
    assert (exact.rewrite("a.example"), exact.rewrite("www.a.example")) == ("b.example", None)


# --- transparent mode -----------------------------------------------------------------------


def test_transparent_mode_is_off_by_default_and_reads_every_key() -> None:
    assert DEFAULT_CONFIG.transparent.listen == ()
    config = parse_config(
        'allow = ["192.168.1.0/24"]\n[transparent]\nlisten = ["0.0.0.0:8081"]\n'
        'mode = "tproxy"\nports = [80, 443, 8080]\nnameless = "refuse"\n'
        'name_timeout = "500ms"\ninterfaces = ["br-lan"]\nowner = "proxyd"\n',
        source="f",
    )
    t = config.transparent
    assert (t.listen, t.mode, t.ports, t.nameless) == (
        (ListenAddress("0.0.0.0", 8081),),
        "tproxy",
        (80, 443, 8080),
        "refuse",
    )
    assert (t.name_timeout, t.interfaces, t.owner) == (0.5, ("br-lan",), "proxyd")
    assert parse_config(dump_config(config), source="dump") == config


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ('[transparent]\nlisten = ["0.0.0.0:8081"]\n', 2, "transparent.listen[0]", "open proxy"),
        ('[transparent]\nmode = "nat"\n', 2, "transparent.mode", "not one of redirect, tproxy"),
        ('[transparent]\nnameless = "drop"\n', 2, "transparent.nameless", "not one of"),
        ('[transparent]\n\ninterfaces = ["br lan"]\n', 3, "transparent.interfaces[0]", "not an"),
        ('[transparent]\nowner = "x y"\n', 2, "transparent.owner", "not a user name"),
        ("[transparent]\nports = [0]\n", 2, "transparent.ports[0]", "out of range"),
        ('[transparent]\nlisten = ["127.0.0.1:0"]\n', 2, "transparent.listen[0]", "fixed"),
        (
            'listen = ["127.0.0.1:8081"]\n[transparent]\nlisten = ["127.0.0.1:8081"]\n',
            3,
            "transparent.listen[0]",
            "is both listen[0] and transparent.listen[0]",
        ),
    ],
)
def test_transparent_errors_name_file_line_and_key(
    text: str, line: int, key: str, message: str
) -> None:
    error = error_for(text)
    assert (error.source, error.line, error.key) == ("proxyd.toml", line, key)
    assert message in error.message
