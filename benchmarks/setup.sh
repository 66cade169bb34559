#!/usr/bin/env bash
# Install what the benchmark harness needs: the origin, the load generators, the peers.
# Debian may start its own services for these packages (nginx, privoxy, squid, tinyproxy);
# the harness never uses them — it starts its own instances with temp configs on free ports.
set -euo pipefail

packages=(nginx-light wrk curl util-linux tinyproxy privoxy squid microsocks)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends \
        "${missing[@]}"
fi

python="${PYTHON:-python3}"
"$python" -c "import pproxy" 2>/dev/null || "$python" -m pip install --quiet pproxy
"$python" -c "import uvloop" 2>/dev/null || "$python" -m pip install --quiet uvloop
echo "benchmark prerequisites installed"
