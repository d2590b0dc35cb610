#!/usr/bin/env python3
"""Reads the JSON lines the benchmarks print and writes one table: each measurement beside the
baseline it was compared with in the same run, and the ratio."""
import json
import sys


def rows(records):
    gateway_healthz = next((r for r in records if r.get("benchmark") == "gateway" and r.get("route") == "healthz"), None)
    engine = {r["route"]: r["engine_ms_per_request"] for r in records if r.get("benchmark") == "engine"}
    llamacpp = [r for r in records if r.get("benchmark", "").startswith("llamacpp_gpt2_124m_") and "ours_decode_batch1_tokens_per_second" in r]
    for r in records:
        kind = r.get("benchmark")
        if kind == "postgres_pool_select":
            yield ("pool: SELECT through PostgresPool", r["pool_queries_per_second"], "q/s",
                   "pgbench -M prepared", r["pgbench_prepared_tps"])
        elif kind == "seal_open_1KiB":
            yield ("envelope seal+open 1 KiB", r["envelope_seal_open_per_second"], "/s",
                   "raw AES-256-GCM", r["raw_aes256gcm_seal_open_per_second"])
        elif kind == "auth_cost":
            yield ("authenticated GET /v1/models", r["authenticated_rps"], "req/s", "GET /healthz (no auth)", r["healthz_rps"])
        elif kind == "metering":
            yield (f"metering admit+settle, {r['clients']} client(s), {r['instances']} inst.",
                   r["admissions_and_settlements_per_second"], "pairs/s",
                   "2 single-row UPDATE transactions", r.get("baseline_two_row_updates_per_second"))
        elif kind == "gpt2_124m_f32":
            yield ("GPT-2 124M decode, batch 1", r["decode_batch1_tokens_per_second"], "tok/s",
                   "memory-bandwidth ceiling", r["bandwidth_ceiling_tokens_per_second"])
            if "greedy_decode_batch1_tokens_per_second" in r:
                yield ("GPT-2 124M greedy decode, batch 1 (bounded int8 head)", r["greedy_decode_batch1_tokens_per_second"], "tok/s",
                       "its memory-bandwidth ceiling", r["greedy_bandwidth_ceiling_tokens_per_second"])
                yield ("GPT-2 124M greedy decode, batch 1 (bounded int8 head)", r["greedy_decode_batch1_tokens_per_second"], "tok/s",
                       "decode, batch 1 (whole head)", r["decode_batch1_tokens_per_second"])
            for baseline in llamacpp:
                rounds, precision = baseline["rounds"], baseline["benchmark"].rsplit("_", 1)[1]
                for what, test, key in (("decode, batch 1", "tg128", "decode_batch1_tokens_per_second"),
                                        ("prompt, 128 tokens", "pp128", "prefill_128_tokens_per_second")):
                    ratios = baseline[("decode" if test == "tg128" else "prefill") + "_ratios"]
                    yield (f"GPT-2 124M {precision} {what} ({test}, median of {rounds})", baseline["ours_" + key], "tok/s",
                           f"llama.cpp {precision}, same weights, alternating (rounds {min(ratios)}-{max(ratios)}x)", baseline[key])
                if "greedy_decode_ratios" in baseline:
                    ratios = baseline["greedy_decode_ratios"]
                    yield (f"GPT-2 124M {precision} greedy decode, bounded head (tg128 tokens, median of {rounds})",
                           baseline["ours_greedy_decode_batch1_tokens_per_second"], "tok/s",
                           f"llama.cpp {precision} tg128 (every logit), alternating (rounds {min(ratios)}-{max(ratios)}x)",
                           baseline["decode_batch1_tokens_per_second"])
            concurrent = [(int(key.split("_")[1]), "_sampling_" in key, value) for key, value in r.items()
                          if key.startswith("concurrent_") and key.endswith("_tokens_per_second")]
            for streams, sampling, value in sorted(concurrent):
                if streams > 1:
                    what = "sampling (temperature 1)" if sampling else "greedy"
                    yield (f"GPT-2 124M, {streams} concurrent streams, {what}", value, "tok/s",
                           "decode, batch 1", r["decode_batch1_tokens_per_second"])
        elif kind == "resnet":
            yield (f"{r['model']}, batch {r['batch']}", r["images_per_second"], "img/s",
                   "ONNX Runtime", r["onnxruntime_images_per_second"])
        elif kind == "gateway" and r.get("route") in ("completion", "classify"):
            route = "completion" if r["route"] == "completion" else "classification"
            floor = 1000 / engine[route] if route in engine and engine[route] else None
            yield (f"gateway {r['route']}, c={r['concurrency']} (p50 {r['p50_ms']} ms)", r["requests_per_second"], "req/s",
                   "engine alone, one request at a time", round(floor, 1) if floor else None)
        elif kind in ("fairness", "fairness_gpt2_124m") and "skipped" not in r:
            model = " (GPT-2 124M)" if kind == "fairness_gpt2_124m" else ""
            yield (f"tenant B p99 under tenant A's flood{model} (p50 {r['flood_p50_ms']} ms)", r["flood_p99_ms"], "ms",
                   "tenant B p99, server idle", r["idle_p99_ms"])
        elif kind == "upstream_latency":
            model = r.get("model", "demo")
            yield (f"llama-server ({model}) through ModelGate: first streamed token, c=1 (p50)", r["gateway_first_token_ms"], "ms",
                   "llama-server directly, alternating", r["direct_first_token_ms"])
            yield (f"llama-server ({model}) through ModelGate: whole {r['max_tokens']}-token stream, c=1 (p50)", r["gateway_total_ms"], "ms",
                   "llama-server directly, alternating", r["direct_total_ms"])
        elif kind == "upstream_throughput":
            yield (f"llama-server ({r.get('model', 'demo')}) through ModelGate, c={r['concurrency']} (rounds {min(r['ratios'])}-{max(r['ratios'])}x)",
                   r["gateway_requests_per_second"], "req/s", "llama-server directly, alternating rounds", r["direct_requests_per_second"])
        elif kind == "gateway" and r.get("route") == "healthz":
            continue
        elif kind == "gateway" and r.get("route") == "nginx" and gateway_healthz:
            yield ("GET /healthz, c=64", gateway_healthz["requests_per_second"], "req/s", "nginx return 200", r["requests_per_second"])


def main():
    records = []
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    table = [("measurement", "value", "baseline (same run)", "baseline value", "ratio")]
    for name, value, unit, baseline, floor in rows(records):
        ratio = f"{value / floor:.2f}x" if floor else "-"
        table.append((name, f"{value:,} {unit}", baseline, f"{floor:,}" if floor is not None else "-", ratio))
    widths = [max(len(str(row[i])) for row in table) for i in range(5)]
    for index, row in enumerate(table):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
