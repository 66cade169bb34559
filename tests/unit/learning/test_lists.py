"""Imported block lists: each format parsed sans-IO, matched by host, bad entries named by
line; as config, a broken list names the config file, line and key and the list's line;
as routing, a listed domain goes to the upstreams and joins the learned table."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.config._config import ConfigError, dump_config, load_config, parse_config
from proxyd.learning._lists import ListError, parse_list
from proxyd.learning._table import Source, State
from proxyd.outbound._dialers import DirectDialer
from proxyd.outbound._upstream_set import UpstreamSet
from proxyd.routing._learned import LearnedRoutes
from proxyd.routing._router import Router


def listed(text: str, fmt: str, *hosts: str) -> list[bool]:
    parsed = parse_list(text, fmt)
    return [parsed.matches(h) for h in hosts]


def test_hostlist_entries_cover_their_subdomains_only() -> None:
    text = "# zapret hostlist\nblog.example\nVideo.Example.  # trailing dot and case\n\n"
    assert listed(text, "hostlist", "blog.example", "a.b.blog.example", "video.example") == [
        True,
        True,
        True,
    ]
    assert listed(text, "hostlist", "notblog.example", "example", "blog.example.org") == [
        False,
        False,
        False,
    ]


GFWLIST = """[AutoProxy 0.2.9]
! comment
||blocked.example
|http://exact.example/path
.dotted.example
/^ads?\\.[a-z]+\\.example$/
tracker
@@||ok.blocked.example
"""


def test_gfwlist_rules_and_exceptions() -> None:
    hosts = (
        "blocked.example",
        "www.blocked.example",
        "ok.blocked.example",  # @@ exception
        "exact.example",
        "sub.exact.example",  # |http:// names one host
        "x.dotted.example",
        "ad.foo.example",
        "mytracker.example",  # bare word: substring
        "open.example",
    )
    expected = [True, True, False, True, False, True, True, True, False]
    assert listed(GFWLIST, "gfwlist", *hosts) == expected
    # published gfwlists are base64 of the same text
    encoded = base64.encodebytes(GFWLIST.encode()).decode()
    assert listed(encoded, "gfwlist", *hosts) == expected


def test_v2fly_prefixes() -> None:
    text = (
        "domain:d.example\nfull:f.example\nkeyword:kw\n"
        "regexp:^r[0-9]+\\.example$\nbare.example @cn\n"
    )
    hosts = (
        "x.d.example",
        "f.example",
        "x.f.example",
        "akwb.example",
        "r42.example",
        "a.bare.example",
    )
    assert listed(text, "v2fly", *hosts) == [True, True, False, True, True, True]


def test_v2fly_include_is_refused_with_its_line() -> None:
    with pytest.raises(ListError) as caught:
        parse_list("domain:a.example\ninclude:other\n", "v2fly")
    assert caught.value.line == 2


def test_zi_csv_rows() -> None:
    text = (
        "Updated: 2026-11-01\n198.18.9.9;csv.example;;court;1;2020\n"
        ";*.wild.example;;x;2;2021\n198.18.9.8;;;y;3;2022\n"
    )
    assert listed(text, "csv", "csv.example", "a.csv.example", "a.wild.example") == [
        True,
        False,
        True,
    ]


def test_bad_regex_is_named_by_line() -> None:
    with pytest.raises(ListError) as caught:
        parse_list("||a.example\n/([/\n", "gfwlist")
    assert caught.value.line == 2


@given(st.text(max_size=300), st.sampled_from(["hostlist", "gfwlist", "v2fly", "csv"]))
def test_any_text_parses_or_fails_with_a_list_error(text: str, fmt: str) -> None:
    try:
        parsed = parse_list(text, fmt)
    except ListError:
        return
    parsed.matches("some.host.example")


# -- as configuration -------------------------------------------------------------------


def write_config(tmp_path: Path, list_text: str, fmt: str = "hostlist", route: str = "") -> Path:
    (tmp_path / "blocked.txt").write_text(list_text)
    route_line = f'route = "{route}"\n' if route else ""
    config = tmp_path / "proxyd.toml"
    config.write_text(
        'log_level = "info"\n\n[[list]]\n'
        f'path = "{tmp_path / "blocked.txt"}"\nformat = "{fmt}"\n{route_line}'
    )
    return config


def test_broken_list_names_config_file_line_key_and_list_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "domain:a.example\nbogus:thing\n", "v2fly")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert message.startswith(f"{config}:4: list[0].path: ")
    assert f"{tmp_path / 'blocked.txt'}:2: unsupported v2fly entry" in message


def test_missing_list_file_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "a.example\n")
    (tmp_path / "blocked.txt").unlink()
    with pytest.raises(ConfigError, match=r"list\[0\]\.path: .*cannot read"):
        load_config(config)


def test_list_route_must_name_an_upstream(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"list\[0\]\.route: no upstream or mirror named 'nope'"):
        load_config(write_config(tmp_path, "a.example\n", route="nope"))


def test_lists_round_trip_through_the_printed_config(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "a.example\n", route="tor"))
    again = parse_config(dump_config(config), source="printed")
    assert again.lists == config.lists
    assert again.lists[0].domains.matches("www.a.example")


# -- as routing ---------------------------------------------------------------------------

TWO_UPSTREAMS = """
[[upstream]]
name = "tor"
url = "socks5h://127.0.0.1:9050"
[[upstream]]
name = "office"
url = "http://127.0.0.1:3128"
"""


async def test_listed_domain_goes_to_the_lists_upstream_and_joins_the_learned_table(
    tmp_path: Path,
) -> None:
    (tmp_path / "list.txt").write_text("listed.example\n")
    config = parse_config(
        TWO_UPSTREAMS + f'[[list]]\npath = "{tmp_path / "list.txt"}"\nroute = "office"\n',
        source="t",
    )
    learned = LearnedRoutes(config.learning, tmp_path, connect_timeout=5.0, clock=lambda: 50.0)
    router = Router(config, DirectDialer(), UpstreamSet(config.upstreams), learned)
    plan = router.plan("www.listed.example", 443)
    assert [r.name for r in plan.routes] == ["office", "tor"]  # no direct attempt
    assert not plan.learn
    entry = learned.lookup("cdn.listed.example")
    assert entry is not None
    assert (entry.key, entry.state, entry.source) == ("listed.example", State.BLOCKED, Source.LIST)
    assert entry.next_retest is not None  # a prior: re-tested like anything learned
    assert router.plan("unlisted.example", 443).routes[0].name == "direct"


def test_a_compacted_list_matches_as_the_parsed_one_does() -> None:
    from proxyd.learning._lists import parse_list

    text = "domain:a.example\nfull:only.b.example\nkeyword:tracker\nregexp:^ads[0-9]+\\.\n"
    hosts = [
        "a.example",
        "x.a.example",
        "only.b.example",
        "x.only.b.example",
        "mytracker.net",
        "ads12.c.example",
        "c.example",
        "example",
    ]
    parsed = parse_list(text, "v2fly")
    before = {h: parsed.matches(h) for h in hosts}
    assert parsed.compact() is parsed and len(parsed) == 4
    assert {h: parsed.matches(h) for h in hosts} == before
    assert [h for h, hit in before.items() if hit] == hosts[:3] + hosts[4:6]


def test_hostlist_fast_path_still_names_the_bad_line() -> None:
    from proxyd.learning._lists import ListError, parse_list

    parsed = parse_list("a.example\nB.Example  # why\n# c\n", "hostlist").compact()
    assert parsed.matches("x.b.example") and not parsed.matches("c")
    with pytest.raises(ListError) as err:
        parse_list("a.example\nnot a domain\n", "hostlist")
    assert err.value.line == 2
