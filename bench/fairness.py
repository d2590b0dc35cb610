#!/usr/bin/env python3
"""Fairness under a flood, on the release binary: tenant B's completion latency while tenant A
keeps 10x the model's queue outstanding (retrying after each 503 as Retry-After says, as the
openai clients do), beside B's latency with the server idle, in one run. Prints one JSON line.

    bench/fairness.py [seconds] [--gpt2]   (bench/run fairness; needs .build/release/modelgate)

The demo model gets a queue of 8 and batches of 4 (as the end-to-end fairness test does), and
completions of 16 tokens. With --gpt2 the model is instead the gpt2 benchmark's GPT-2 124M (an
engine-bound model: queue 64, batches of 32, completions of 8 tokens, 40 of B's requests per
phase; needs ../shared's GPT-2 vocabulary, skips without it). B sends one request at a time;
its p99 under the flood against its idle p99 is the ratio that matters.
Idle and flood phases alternate in ROUNDS rounds (the flooder pauses between them), and each
phase's samples are pooled over the rounds: this machine's speed drifts over tens of seconds,
and two long phases one after the other measured the drift as much as the flood.
Client and server share this machine's cores. The flooder is 80 Python threads in a process of
its own (`--flood`), as another tenant's clients would be: in B's own interpreter they would
hold B's client thread back on the GIL.
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BINARY = os.environ.get("MODELGATE_BINARY") or os.path.join(ROOT, ".build", "release", "modelgate")
GPT2 = "--gpt2" in sys.argv
SECONDS = next((float(a) for a in sys.argv[1:2] if not a.startswith("-")), 10)
FLOODERS = 80
ROUNDS = 5
if GPT2:
    NAME, QUEUE, BATCH, TOKENS, COUNT = "gpt2-124m", 64, 32, 8, 40
else:
    NAME, QUEUE, BATCH, TOKENS, COUNT = "shakespeare", 8, 4, 16, max(600, int(SECONDS * 60))
BODY = json.dumps({"model": NAME, "prompt": "KING:", "max_tokens": TOKENS, "temperature": 0})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive connection."""

    def __init__(self, port, key, body=BODY):
        self.port, self.key, self.body, self.connection, self.processing = port, key, body, None, -1.0

    def complete(self):
        for attempt in range(2):
            try:
                if self.connection is None:
                    self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.connection.request("POST", "/v1/completions", self.body,
                                        {"Authorization": "Bearer " + self.key, "Content-Type": "application/json"})
                response = self.connection.getresponse()
                response.read()
                self.processing = float(response.getheader("openai-processing-ms") or -1)
                return response.status, response.getheader("Retry-After")
            except (OSError, http.client.HTTPException):
                self.connection = None
                if attempt == 1:
                    return -1, None


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure(client, count):
    """Round trips and server-side times (openai-processing-ms), in ms."""
    latencies, server = [], []
    for _ in range(count):
        start = time.perf_counter()
        status, _ = client.complete()
        if status != 200:
            raise SystemExit(f"tenant B got {status}")
        latencies.append((time.perf_counter() - start) * 1000)
        server.append(client.processing)
    return latencies, server


def main():
    work = tempfile.mkdtemp(prefix="modelgate-bench-fairness-")
    server = None
    try:
        models = os.path.join(work, "models", NAME)
        os.makedirs(models)
        if GPT2:
            manifest = gpt2_model(models)
            if manifest is None:
                print(json.dumps({"benchmark": "fairness_gpt2_124m", "skipped": "../shared/tokenizers/gpt2 is absent"}))
                return
        else:
            source = os.path.join(ROOT, "models", "shakespeare")
            for name in os.listdir(source):
                if name != "model.json":
                    os.symlink(os.path.join(source, name), os.path.join(models, name))
            manifest = json.load(open(os.path.join(source, "model.json")))
        manifest["options"] = {"queue_capacity": QUEUE, "max_batch": BATCH}
        json.dump(manifest, open(os.path.join(models, "model.json"), "w"))
        port = free_port()
        environment = dict(os.environ, MODELGATE_LOG_LEVEL="warning", MODELGATE_MODELS_DIRECTORY=os.path.join(work, "models"))
        log = open(os.path.join(work, "serve.log"), "w")
        server = subprocess.Popen([BINARY, "serve", "--port", str(port)], cwd=work, env=environment, stdout=log, stderr=log)
        for _ in range(600):
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)

        def cli(*arguments):
            return subprocess.check_output([BINARY, *arguments], cwd=work, env=dict(environment, MODELGATE_LOG_LEVEL="error"), text=True)

        cli("plan", "create", "bench", "requests_per_minute=none", "tokens_per_minute=none", "max_concurrent=none",
            "monthly_tokens=none", "monthly_images=none", "monthly_budget_micros=none")
        keys = {}
        for tenant in ("a", "b"):
            cli("tenant", "create", "--slug", "fair-" + tenant, "--name", tenant, "--plan", "bench")
            keys[tenant] = json.loads(cli("key", "create", "--tenant", "fair-" + tenant, "--name", tenant, "--json"))["key"]

        b = Client(port, keys["b"])
        measure(b, 10)  # warm
        # A's key goes in the environment, not on a command line anyone on the machine can list.
        flooder = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--flood", str(port), BODY],
                                   env=dict(os.environ, MODELGATE_FLOOD_KEY=keys["a"]),
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def tell(command):
            flooder.stdin.write(command + "\n")
            flooder.stdin.flush()

        idle, idle_server, loaded, loaded_server, rounds = [], [], [], [], []
        per_round = max(1, COUNT // ROUNDS)
        for _ in range(ROUNDS):
            latencies, server_ms = measure(b, per_round)
            idle += latencies
            idle_server += server_ms
            tell("flood")
            time.sleep(1)  # the flood builds up, and its first refusals come back
            tell("count")
            flooded, flooded_server = measure(b, per_round)
            tell("pause")
            loaded += flooded
            loaded_server += flooded_server
            rounds.append(round(percentile(flooded, 99) / percentile(latencies, 99), 2))
            # A's requests in flight finish; its clients asleep on Retry-After stay asleep.
            time.sleep(1.5 if not GPT2 else 3)
        tell("stop")
        statuses = json.loads(flooder.communicate(timeout=180)[0])
        completed, window = statuses.pop("completions_in_window"), statuses.pop("window_seconds")
        print(json.dumps({
            "benchmark": "fairness_gpt2_124m" if GPT2 else "fairness", "requests": len(idle), "rounds": ROUNDS,
            "idle_p50_ms": round(percentile(idle, 50), 2), "idle_p99_ms": round(percentile(idle, 99), 2),
            "flood_p50_ms": round(percentile(loaded, 50), 2), "flood_p99_ms": round(percentile(loaded, 99), 2),
            "ratio_p99_flood_vs_idle": round(percentile(loaded, 99) / percentile(idle, 99), 2),
            "ratio_p99_per_round": rounds,
            "server_idle_p50_ms": percentile(idle_server, 50), "server_flood_p50_ms": percentile(loaded_server, 50),
            "server_flood_p99_ms": percentile(loaded_server, 99),
            "flooder_statuses": statuses,
            "flooder_completions_per_second": round(completed / max(window, 1e-9), 1),
        }), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
            subprocess.run([BINARY, "db", "stop"], cwd=work, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def gpt2_model(directory):
    """The gpt2 benchmark's GPT-2 124M weights (written by modelgate-bench gpt2 if absent) with
    GPT-2's real vocabulary from ../shared, as a model folder; its manifest, or None."""
    vocabulary = os.path.join(ROOT, "..", "shared", "tokenizers", "gpt2")
    if not os.path.isfile(os.path.join(vocabulary, "vocab.json")):
        return None
    weights = os.path.join(tempfile.gettempdir(), "modelgate-bench-gpt2-124m")
    if not os.path.isfile(os.path.join(weights, "model.safetensors")):
        subprocess.run([os.path.join(ROOT, ".build", "release", "modelgate-bench"), "gpt2", "--seconds", "1"],
                       check=True, stdout=subprocess.DEVNULL)
    for folder, name in ((weights, "model.safetensors"), (weights, "config.json"), (vocabulary, "vocab.json"), (vocabulary, "merges.txt")):
        os.symlink(os.path.join(folder, name), os.path.join(directory, name))
    return {"engine": "transformer-lm", "task": "text-generation", "display_name": "GPT-2 124M shape (random weights)",
            "version": "1", "context_length": 1024, "visibility": "public",
            "files": {"weights": "model.safetensors", "config": "config.json", "vocab": "vocab.json", "merges": "merges.txt"}}


def flood(port, key, body):
    """Tenant A: FLOODERS threads, each sending a request as soon as the last one finished (after
    Retry-After on a 503), while flooding. Commands on stdin: `flood` starts (or resumes),
    `count` starts counting A's completions, `pause` stops both, `stop` prints the statuses
    seen, the completions counted and the seconds counted as JSON, and exits."""
    flooding, stopping = threading.Event(), threading.Event()
    statuses, lock = {}, threading.Lock()
    counted = {"completions": 0, "seconds": 0.0, "since": None}

    def loop():
        client = Client(port, key, body)
        while not stopping.is_set():
            if not flooding.wait(0.1):
                continue
            status, retry = client.complete()
            with lock:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200 and counted["since"] is not None:
                    counted["completions"] += 1
            if status != 200:
                stopping.wait(float(retry or 1))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(FLOODERS)]
    for thread in threads:
        thread.start()
    for line in sys.stdin:
        command = line.strip()
        with lock:
            if command == "flood":
                flooding.set()
            elif command == "count":
                counted["since"] = time.time()
            elif command in ("pause", "stop"):
                flooding.clear()
                if counted["since"] is not None:
                    counted["seconds"] += time.time() - counted["since"]
                    counted["since"] = None
        if command == "stop":
            break
    stopping.set()
    for thread in threads:
        thread.join(timeout=35)
    with lock:
        print(json.dumps(dict(sorted(statuses.items()), completions_in_window=counted["completions"],
                              window_seconds=counted["seconds"])), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--flood":
        flood(int(sys.argv[2]), os.environ["MODELGATE_FLOOD_KEY"], sys.argv[3])
    else:
        main()
