"""What the lab's mirror site (blog-mirror.example, ``httpd.py --mirror``) serves.

Shared by the server and the tests, so a test can compute what proxyd must make of it.
"""

from __future__ import annotations


def mirror_page(host: str, path: str) -> str:
    """The HTML a mirror serves: links to itself and its sibling hosts, and elsewhere."""
    return (
        f"<html><body><p>mirror {host} {path}</p>\n"
        f'<a href="http://{host}/a">same host</a>\n'
        '<a href="https://www.blog-mirror.example/b">https sibling</a>\n'
        "<img src='//x.blog-mirror.example/c.png'>\n"
        '<a href="http://open.example/d">elsewhere</a>\n'
        "</body></html>\n"
    )


MIRROR_CSS = "body { background: url(http://www.blog-mirror.example/bg.png) }\n"
BIG_BLOCK = b'<a href="http://www.blog-mirror.example/x">x</a>' * 1365  # about 64 KiB
BIG_BLOCKS = 380  # about 24 MB, 21 MB once rewritten
