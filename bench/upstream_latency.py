#!/usr/bin/env python3
"""Added latency of a gateway in front of an OpenAI-compatible server: streamed completions at
concurrency 1, sent alternately to the server directly and through the gateway (same prompt,
same max_tokens, temperature 0), a new connection per request on both sides. Prints one JSON
line: the medians of time to the first streamed token and to the whole response for each side,
and what the gateway adds (the median of the per-pair differences).

    bench/upstream_latency.py DIRECT_BASE GATEWAY_BASE KEY MODEL REQUESTS CPU [LABEL]
"""
import http.client
import json
import statistics
import sys
import time
from urllib.parse import urlparse


def stream(base, key, model, max_tokens):
    url = urlparse(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    body = json.dumps({"model": model, "prompt": "ROMEO:", "max_tokens": max_tokens, "temperature": 0, "stream": True})
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    start = time.perf_counter()
    connection.request("POST", "/v1/completions", body, headers)
    response = connection.getresponse()
    if response.status != 200:
        raise SystemExit(f"{base}: HTTP {response.status}: {response.read()[:300]!r}")
    first = None
    while True:
        line = response.readline()
        if not line:
            break
        if line.startswith(b"data: ") and first is None:
            first = time.perf_counter()
        if line.startswith(b"data: [DONE]"):
            break
    total = time.perf_counter() - start
    connection.close()
    return (first - start) * 1000, total * 1000


def main():
    direct, gateway, key, model, requests, cpu = sys.argv[1:7]
    label = sys.argv[7] if len(sys.argv) > 7 else model
    pairs = []
    for _ in range(3):  # warm both sides
        stream(direct, None, model, 16), stream(gateway, key, "fleet", 16)
    for _ in range(int(requests)):
        pairs.append((stream(direct, None, model, 16), stream(gateway, key, "fleet", 16)))
    median = lambda values: round(statistics.median(values), 3)
    print(json.dumps({
        "benchmark": "upstream_latency", "model": label, "cpu": cpu, "concurrency": 1, "requests": len(pairs), "max_tokens": 16,
        "direct_first_token_ms": median([d[0] for d, _ in pairs]), "gateway_first_token_ms": median([g[0] for _, g in pairs]),
        "direct_total_ms": median([d[1] for d, _ in pairs]), "gateway_total_ms": median([g[1] for _, g in pairs]),
        "added_first_token_ms_p50": median([g[0] - d[0] for d, g in pairs]),
        "added_total_ms_p50": median([g[1] - d[1] for d, g in pairs]),
    }))


if __name__ == "__main__":
    main()
