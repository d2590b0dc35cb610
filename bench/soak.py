#!/usr/bin/env python3
"""Soak: a zero-config `modelgate serve` (release build) under a steady request rate for N
minutes — completions (plain and streamed), chat, model listing and usage reads. Every 30 s it
samples the server's resident memory, open file descriptors and database pool from /metrics.
Reports start and end, and exits non-zero on any error response, on resident memory growing by
more than 25 % (after warm-up) or on connections or descriptors left over at the end.

Usage: python3 bench/soak.py [--minutes 10] [--rate 40] [--binary .build/release/modelgate]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, key=None, body=None, timeout=60):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def sample(pid, port):
    with open(f"/proc/{pid}/status") as status:
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) * 1024
    descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    _, metrics = request(port, "GET", "/metrics")
    text = metrics.decode()

    def gauge(name):
        match = re.search(r"^%s(?:\{[^}]*\})? ([\d.e+-]+)$" % name, text, re.M)
        return float(match.group(1)) if match else -1

    return {"rss_mib": round(rss / 1048576, 1), "fds": descriptors,
            "pool_connections": gauge("modelgate_db_pool_connections"), "pool_in_use": gauge("modelgate_db_pool_in_use")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=40, help="requests per second, all kinds together")
    parser.add_argument("--binary", default=os.path.join(REPOSITORY, ".build/release/modelgate"))
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        subprocess.run(["swift", "build", "-c", "release", "--product", "modelgate"], cwd=REPOSITORY, check=True)

    scratch = tempfile.mkdtemp(prefix="mg-soak-")
    os.chmod(scratch, 0o755)
    port = free_port()
    log = open(os.path.join(scratch, "serve.log"), "w")
    environment = dict(os.environ, MODELGATE_MODELS_DIRECTORY=os.path.join(REPOSITORY, "models"))
    server = subprocess.Popen([args.binary, "serve", "--port", str(port)], cwd=scratch, stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        for _ in range(600):
            try:
                if request(port, "GET", "/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        operator = re.search(r"mgk_[A-Za-z0-9]+", open(os.path.join(scratch, "serve.log")).read()).group(0)
        _, body = request(port, "POST", "/admin/v1/tenants", operator, {"slug": "soak", "display_name": "Soak"})
        tenant = json.loads(body)["id"]
        request(port, "PUT", f"/admin/v1/tenants/{tenant}/limits", operator,
                {"requests_per_minute": 1000000, "tokens_per_minute": 1000000000, "max_concurrent": 1000, "monthly_tokens": 10 ** 12})
        _, body = request(port, "POST", f"/admin/v1/tenants/{tenant}/keys", operator, {"name": "soak", "scopes": ["inference", "usage:read"]})
        key = json.loads(body)["key"]

        kinds = [
            ("POST", "/v1/completions", {"model": "shakespeare", "prompt": "ROMEO:", "max_tokens": 16, "temperature": 0.8}),
            ("POST", "/v1/completions", {"model": "shakespeare", "prompt": "JULIET:", "max_tokens": 16, "stream": True}),
            ("POST", "/v1/chat/completions", {"model": "shakespeare", "messages": [{"role": "user", "content": "Speak."}], "max_tokens": 12}),
            ("GET", "/v1/models", None),
            ("GET", "/v1/usage", None),
        ]
        counts = {}
        errors = []
        lock = threading.Lock()
        stop = time.time() + args.minutes * 60
        interval = 1 / args.rate

        def worker(offset):
            next_start = time.time() + offset
            index = int(offset * 1000)
            while next_start < stop:
                time.sleep(max(0, next_start - time.time()))
                method, path, body = kinds[index % len(kinds)]
                index += 1
                try:
                    status, data = request(port, method, path, key, body)
                except Exception as error:  # a refused or dropped connection is an error too
                    status, data = 0, str(error).encode()
                with lock:
                    counts[status] = counts.get(status, 0) + 1
                    if status != 200 and len(errors) < 5:
                        errors.append(f"{status} {method} {path}: {data[:200]!r}")
                next_start += interval * 8

        threads = [threading.Thread(target=worker, args=(i * interval,)) for i in range(8)]
        for thread in threads:
            thread.start()
        samples = []
        started = time.time()
        while any(thread.is_alive() for thread in threads):
            samples.append(dict(sample(server.pid, port), minute=round((time.time() - started) / 60, 1)))
            print(json.dumps(samples[-1]), flush=True)
            for _ in range(30):
                if not any(thread.is_alive() for thread in threads):
                    break
                time.sleep(1)
        for thread in threads:
            thread.join()
        time.sleep(2)
        end = sample(server.pid, port)
        warm = samples[min(1, len(samples) - 1)]  # after the first 30 s: caches and pools are warm
        total = sum(counts.values())
        growth = (end["rss_mib"] - warm["rss_mib"]) / warm["rss_mib"]
        report = {
            "benchmark": "soak", "minutes": args.minutes, "requests": total, "requests_per_second": round(total / (time.time() - started), 1),
            "statuses": {str(k): v for k, v in sorted(counts.items())},
            "rss_mib_start": samples[0]["rss_mib"], "rss_mib_after_warmup": warm["rss_mib"], "rss_mib_end": end["rss_mib"],
            "rss_growth_after_warmup": round(growth, 3),
            "fds_after_warmup": warm["fds"], "fds_end": end["fds"],
            "pool_connections_end": end["pool_connections"], "pool_in_use_end": end["pool_in_use"],
        }
        print(json.dumps(report), flush=True)
        problems = []
        if set(counts) != {200}:
            problems.append(f"error responses: {errors}")
        if growth > 0.25:
            problems.append(f"resident memory grew {growth:.0%} after warm-up")
        if end["pool_in_use"] > 0 or end["fds"] > warm["fds"] + 8:
            problems.append("connections or descriptors left open")
        for problem in problems:
            print("FAIL: " + problem, file=sys.stderr)
        return 1 if problems else 0
    finally:
        server.terminate()
        server.wait(timeout=60)
        subprocess.run([args.binary, "db", "stop"], cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
