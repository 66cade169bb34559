"""Issue 4: a blocked plain-HTTP site reached through its mirror, in the censorship lab.

blog.example (and www.blog.example) is blocked: the censor resets any port-80 packet
carrying its Host header and any ClientHello naming it. Its community mirror
blog-mirror.example (with www. and x.) is open and serves links to itself
(servers/httpd.py ``_mirror``). gone-mirror.example is an address where every
connection is refused: a mirror that is down. curl runs in the client namespace with
``-x`` at a real proxyd.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from lab_mirror import BIG_BLOCK, BIG_BLOCKS, MIRROR_CSS, mirror_page
from lab_sites import CLIENT_IP, SOCKS_IP
from netlab import NetLab
from proxyd_fixture import (
    NO_RETEST_SOON,
    ProxydLauncher,
    curl_via,
    learned,
    origin_answer,
    proxyd_config,
    unique_path,
)

from tests.support.proc import Proxyd

BLOG = '[[mirror]]\nname = "blog"\nfrom = "*.blog.example"\nto = "*.blog-mirror.example"\n'
CHROMIUM_FLAGS = ("--disable-background-networking", "--disable-component-update", "--no-first-run")
# Headers a browser sends with a page request.
BROWSER = (
    "-H",
    "Accept: text/html,application/xhtml+xml,*/*;q=0.8",
    "-H",
    "Accept-Encoding: gzip, deflate, br",
    "-A",
    "Mozilla/5.0 (X11; Linux x86_64) proxyd-test",
)


def start(
    lab: NetLab,
    launch_proxyd: ProxydLauncher,
    mirror: str,
    *,
    upstream: bool = True,
    args: tuple[str, ...] = (),
) -> Proxyd:
    upstreams = [("tor", lab.socks.url)] if upstream else []
    config = proxyd_config(upstreams, **NO_RETEST_SOON)
    if not upstream:
        config = "upstream = []\n" + config
    return launch_proxyd.start(config + mirror, *args)


def blog_mirror(mode: str, when: str = "blocked") -> str:
    return BLOG + f'mode = "{mode}"\nwhen = "{when}"\n'


def rewritten(text: str) -> str:
    """What proxyd makes of the mirror's page: links back at the original, plain http."""
    text = re.sub(r"https?://([a-z.]*)blog-mirror\.example", r"http://\1blog.example", text)
    return text.replace("//x.blog-mirror.example", "//x.blog.example")


def test_redirect_mode_answers_302_to_the_mirror_and_following_it_succeeds(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(netlab, launch_proxyd, blog_mirror("redirect"))
    path = unique_path()
    mark = netlab.origin_mark()
    first = curl_via(netlab, proxy, f"http://blog.example{path}")
    assert first.http_code == 302, (first, proxy.log_text())
    head = curl_via(netlab, proxy, f"http://blog.example{path}", "-sI").body
    assert f"Location: http://blog-mirror.example{path}" in head

    followed = curl_via(netlab, proxy, f"http://blog.example{path}", "-L")
    assert followed.exit_code == 0, followed
    assert followed.body == origin_answer("blog-mirror.example", path)
    # the mirror came before the upstream: the blocked site never saw a request
    assert all(r.host != "blog.example" for r in netlab.origin_log(since=mark))
    netlab.wait_for_origin(host="blog-mirror.example", path=path, peer_ip=CLIENT_IP)
    assert proxy.wait_for_log(learned("blog.example")).group(2) == "mirror:blog"


def test_proxy_mode_serves_the_mirror_under_the_original_url_with_links_rewritten(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(netlab, launch_proxyd, blog_mirror("proxy"))
    mark = netlab.origin_mark()
    page = curl_via(netlab, proxy, "http://blog.example/page.html", *BROWSER, "--compressed")
    assert page.http_code == 200, (page, proxy.log_text())
    expected = rewritten(mirror_page("blog-mirror.example", "/page.html"))
    assert page.body == expected
    assert 'href="http://www.blog.example/b"' in page.body  # https link now plain http
    assert 'href="http://open.example/d"' in page.body  # other sites untouched
    netlab.wait_for_origin(host="blog-mirror.example", path="/page.html", since=mark)
    assert all(r.host != "blog.example" for r in netlab.origin_log(since=mark))

    css = curl_via(netlab, proxy, "http://blog.example/style.css", *BROWSER)
    assert css.body == rewritten(MIRROR_CSS)

    moved = curl_via(netlab, proxy, "http://blog.example/moved", "-sI")
    assert "Location: http://blog.example/page.html" in moved.body
    cookie = curl_via(netlab, proxy, "http://blog.example/cookie", "-sI")
    assert "Set-Cookie: session=1; Domain=blog.example; Path=/; HttpOnly" in cookie.body


@pytest.mark.usefixtures("chromium")
def test_chromium_gets_the_gzip_page_from_the_mirror_on_its_first_visit_with_links_rewritten(
    netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path
) -> None:
    proxy = start(netlab, launch_proxyd, blog_mirror("proxy"))
    argv = netlab.chromium_argv(
        "http://blog.example/gzip.html",
        tmp_path / "profile",
        *CHROMIUM_FLAGS,
        f"--proxy-server={proxy.url}",
    )
    page = netlab.exec_client(argv, timeout=60)
    dom = page.stdout
    assert "mirror blog-mirror.example /gzip.html" in dom, (page.stderr[-2000:], proxy.log_text())
    assert 'href="http://blog.example/a"' in dom
    assert 'href="http://www.blog.example/b"' in dom
    assert 'src="//x.blog.example/c.png"' in dom
    assert 'href="http://open.example/d"' in dom
    assert proxy.wait_for_log(learned("blog.example")).group(2) == "mirror:blog"


@pytest.mark.parametrize("compressed", [True, False], ids=["client-accepts-gzip", "identity"])
def test_proxy_mode_decodes_a_gzip_page_rewrites_it_and_sends_it_uncompressed(
    netlab: NetLab, launch_proxyd: ProxydLauncher, compressed: bool
) -> None:
    proxy = start(netlab, launch_proxyd, blog_mirror("proxy", when="always"))
    extra = ("--compressed",) if compressed else ()
    url = "http://blog.example/gzip.html"
    page = curl_via(netlab, proxy, url, *BROWSER, *extra)
    assert page.exit_code == 0, (page, proxy.log_text())
    assert page.body == rewritten(mirror_page("blog-mirror.example", "/gzip.html"))
    head = curl_via(netlab, proxy, url, *BROWSER, "-sI").body.lower()
    assert "content-encoding" not in head


def test_proxy_mode_streams_20_mb_with_bounded_memory(
    netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path
) -> None:
    proxy = start(netlab, launch_proxyd, blog_mirror("proxy", when="always"))
    warm = curl_via(netlab, proxy, "http://www.blog.example/page.html")
    assert warm.http_code == 200, warm
    before = proxy.rss_kib()
    out = tmp_path / "big.html"
    result = curl_via(
        netlab, proxy, "http://www.blog.example/big.html", "-o", str(out), max_time=60
    )
    assert result.exit_code == 0, (result, proxy.log_text())
    block = BIG_BLOCK.replace(b"www.blog-mirror.example", b"www.blog.example")
    expected = hashlib.sha256(block * BIG_BLOCKS).hexdigest()
    assert out.stat().st_size == len(block) * BIG_BLOCKS > 20_000_000
    assert hashlib.sha256(out.read_bytes()).hexdigest() == expected
    peak = proxy.rss_kib("VmHWM")
    for _ in range(2):
        curl_via(netlab, proxy, "http://www.blog.example/big.html", "-o", str(out), max_time=60)
        print("again", proxy.rss_kib("VmHWM"), proxy.rss_kib())
    print(f"proxyd RSS before {before} KiB, peak while streaming {peak} KiB")
    assert peak - before < 8 * 1024, (before, peak)


def test_proxy_mode_forwards_a_request_body_to_the_mirror(
    netlab: NetLab, launch_proxyd: ProxydLauncher, tmp_path: Path
) -> None:
    proxy = start(netlab, launch_proxyd, blog_mirror("proxy", when="always"))
    upload = tmp_path / "form.bin"
    upload.write_bytes(bytes(range(256)) * 4096)  # 1 MiB: curl asks for 100-continue
    result = curl_via(
        netlab, proxy, "http://blog.example/echo", "--data-binary", f"@{upload}", max_time=20
    )
    digest = hashlib.sha256(upload.read_bytes()).hexdigest()
    assert result.body == f"POST {upload.stat().st_size} {digest}\n", (result, proxy.log_text())
    netlab.wait_for_origin(host="blog-mirror.example", path="/echo")


def test_wildcard_mapping_keeps_the_subdomain_of_each_host(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(netlab, launch_proxyd, blog_mirror("proxy", when="always"))
    for label in ("", "www.", "x."):
        path = unique_path()
        result = curl_via(netlab, proxy, f"http://{label}blog.example{path}")
        assert result.body == origin_answer(f"{label}blog-mirror.example", path), result


def test_when_blocked_leaves_a_site_that_works_direct_alone(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    mirror = '[[mirror]]\nfrom = "open.example"\nto = "mirror.example"\nmode = "proxy"\n'
    proxy = start(netlab, launch_proxyd, mirror)
    mark = netlab.origin_mark()
    for _ in range(2):
        path = unique_path()
        result = curl_via(netlab, proxy, f"http://open.example{path}")
        assert result.body == origin_answer("open.example", path)
        netlab.wait_for_origin(host="open.example", path=path, peer_ip=CLIENT_IP, since=mark)
    assert all(r.host != "mirror.example" for r in netlab.origin_log(since=mark))


@pytest.mark.parametrize("censorship", ["block_host_header", "redirect_http"])
def test_a_mirror_blocked_too_is_reached_through_the_upstream_and_learned(
    netlab: NetLab, launch_proxyd: ProxydLauncher, censorship: str
) -> None:
    getattr(netlab.censor, censorship)("blog-mirror.example")
    proxy = start(netlab, launch_proxyd, blog_mirror("proxy", when="always"))
    for visit in range(2):
        hits = netlab.censor.hits("blog-mirror.example")
        path = unique_path()
        mark = netlab.origin_mark()
        result = curl_via(netlab, proxy, f"http://blog.example{path}")
        assert result.body == origin_answer("blog-mirror.example", path), (result, proxy.log_text())
        netlab.wait_for_origin(host="blog-mirror.example", path=path, peer_ip=SOCKS_IP, since=mark)
        if visit == 0:
            assert proxy.wait_for_log(learned("blog-mirror.example")).group(2) == "tor"
            assert netlab.censor.hits("blog-mirror.example") > hits
        else:
            # learned: straight through the upstream, nothing for the censor to catch
            assert netlab.censor.hits("blog-mirror.example") == hits


GONE = (
    '[[mirror]]\nname = "gone"\nfrom = "blog.example"\nto = "gone-mirror.example"\nmode = "proxy"\n'
)


def test_a_mirror_that_is_down_falls_back_to_the_upstream(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(netlab, launch_proxyd, GONE)
    path = unique_path()
    result = curl_via(netlab, proxy, f"http://blog.example{path}")
    assert result.body == origin_answer("blog.example", path), (result, proxy.log_text())
    netlab.wait_for_origin(host="blog.example", path=path, peer_ip=SOCKS_IP)
    proxy.wait_for_log(re.escape("mirror gone (gone-mirror.example) down"))


def test_a_mirror_answering_5xx_falls_back_to_the_upstream(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(netlab, launch_proxyd, blog_mirror("proxy", when="always"))
    result = curl_via(netlab, proxy, "http://blog.example/fail")
    assert result.body == origin_answer("blog.example", "/fail"), result
    netlab.wait_for_origin(host="blog.example", path="/fail", peer_ip=SOCKS_IP)


def test_without_upstream_a_mirror_that_is_down_gives_502_naming_it(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(netlab, launch_proxyd, GONE, upstream=False)
    result = curl_via(netlab, proxy, f"http://blog.example{unique_path()}")
    assert result.http_code == 502, result
    assert "mirror gone (gone-mirror.example) failed" in result.body, result.body


def test_https_to_a_mirrored_host_without_upstream_is_refused_and_explained(
    netlab: NetLab, launch_proxyd: ProxydLauncher
) -> None:
    proxy = start(
        netlab,
        launch_proxyd,
        blog_mirror("proxy", when="always"),
        upstream=False,
        args=("--admin", "127.0.0.1:0"),
    )
    result = curl_via(netlab, proxy, "https://blog.example/")
    assert result.http_connect == 502, result
    assert result.exit_code != 0
    proxy.wait_for_log("refusing tunnels to blog.example: served by mirror blog")
    admin = proxy.wait_for_log(r"admin listening on (\S+):(\d+)")
    base = f"http://{admin[1]}:{admin[2]}"

    def get(path: str) -> str:
        answer = netlab.exec_client(["curl", "-sS", base + path])
        assert answer.returncode == 0, answer
        return str(answer.stdout)

    assert "carries plain HTTP only" in get("/api/explain?host=blog.example")
    (status,) = json.loads(get("/api/mirrors"))["mirrors"]
    assert "no upstream is configured" in status["https"]
    assert status["up"] is None  # not used yet

    assert curl_via(netlab, proxy, "http://blog.example/page.html").http_code == 200
    (status,) = json.loads(get("/api/mirrors"))["mirrors"]
    assert status["up"] is True
    assert 'route="mirror:blog"' in get("/metrics")
    page = get("/")
    assert "<h2>Mirrors</h2>" in page and "refused while the mirror is in use" in page
