"""Read a running daemon's metrics the way Prometheus does: over HTTP, in the text format."""

from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(admin_url: str) -> dict[str, float]:
    """Every sample as ``'name{label="value",...}' -> value`` (labels sorted by name)."""
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def metrics_text(admin_url: str) -> str:
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def wait_for_metric(admin_url: str, key: str, expected: float, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := scrape(admin_url).get(key)) != expected:
        assert time.monotonic() < deadline, f"{key} = {got}, expected {expected}"
        time.sleep(0.05)


def limit_hits(admin_url: str, limit: str) -> float:
    return scrape(admin_url).get(f'proxyd_limit_hits_total{{limit="{limit}"}}', 0.0)
