"""/etc/proxyd/proxyd.toml as installed: config/proxyd.toml with every setting commented out.

The file then changes nothing (proxyd runs on its embedded defaults, which it shows), and an
upgrade that changes a default reaches the router: a file of uncommented defaults would pin
the old values forever.
"""

from __future__ import annotations

import re

# `key = value` and `[[array]]` headers, which start at column 0 in the example. Plain
# `[table]` headers stay: an empty table is valid and an uncommented key lands in its table.
# An empty `[[upstream]]` would be an upstream without a url, so those headers are commented.
SETTING = re.compile(r"^(?:[A-Za-z_][\w-]*\s*=|\[\[)")

HEADER = """\
# Written by scripts/install-router. Every setting below is commented out: proxyd runs on
# its embedded defaults, which are the values shown. Uncomment a line to change it (an
# [[upstream]], [[rule]], [[list]] or [[mirror]] needs its header line uncommented too),
# check with `proxyd check -c /etc/proxyd/proxyd.toml`, then `systemctl reload proxyd`.
# Upgrades never touch this file.
#
"""


def commented_config(example: str) -> str:
    lines = [f"#{line}" if SETTING.match(line) else line for line in example.splitlines()]
    return HEADER + "\n".join(lines) + "\n"
