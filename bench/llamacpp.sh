#!/usr/bin/env bash
# llama.cpp on the gpt2 benchmark's own GPT-2-124M-shaped weights (float32), as the baseline for
# batch-1 decoding and 128-token prompt processing: llama-bench tg128 and pp128 on every core.
# Prints one JSON line. Builds llama.cpp once (its sources come with the llama-cpp-python sdist
# from PyPI, pinned) into a cache outside the repository; needs ../shared's GPT-2 vocabulary for
# the GGUF file (skips with a message without it). Usage: bench/llamacpp.sh   (after bench/run gpt2,
# which writes the weights)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
version=0.3.36
cache=${MODELGATE_BENCH_CACHE:-/var/tmp/modelgate-bench}
source_dir=$cache/llama_cpp_python-$version/vendor/llama.cpp
bench=$source_dir/build/bin/llama-bench
weights=${TMPDIR:-/tmp}/modelgate-bench-gpt2-124m
vocabulary=$repo/../shared/tokenizers/gpt2
gguf=$cache/gpt2-124m-bench-f32.gguf
mkdir -p "$cache"

if [ ! -f "$vocabulary/vocab.json" ]; then
  echo '{"benchmark": "llamacpp_gpt2_124m_f32", "skipped": "../shared/tokenizers/gpt2 is absent"}'
  exit 0
fi
[ -f "$weights/model.safetensors" ] || .build/release/modelgate-bench gpt2 --seconds 1 >/dev/null

# A venv with the build tools (the sdist's metadata needs scikit-build-core) and numpy.
venv=$cache/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet scikit-build-core cmake ninja "numpy>=2.2.6" tqdm pyyaml requests >&2
fi
if [ ! -x "$bench" ]; then
  "$venv/bin/pip" download --quiet --no-deps --no-build-isolation "llama-cpp-python==$version" -d "$cache" >&2
  tar xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache"
  PATH=$venv/bin:$PATH cmake -S "$source_dir" -B "$source_dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  PATH=$venv/bin:$PATH cmake --build "$source_dir/build" --target llama-bench -j"$(nproc)" >&2
fi
if [ ! -f "$gguf" ] || [ "$weights/model.safetensors" -nt "$gguf" ]; then
  PYTHONPATH=$source_dir/gguf-py "$venv/bin/python" bench/gguf_gpt2.py "$weights" "$vocabulary" "$gguf" >&2
fi

"$bench" -m "$gguf" -p 128 -n 128 -t "$(nproc)" -r 3 -o json 2>/dev/null | python3 -c '
import json, sys
runs = json.load(sys.stdin)
rate = {("prefill" if r["n_prompt"] else "decode"): r["avg_ts"] for r in runs}
print(json.dumps({"benchmark": "llamacpp_gpt2_124m_f32", "build": runs[0].get("build_commit"),
                  "decode_batch1_tokens_per_second": round(rate["decode"], 1),
                  "prefill_128_tokens_per_second": round(rate["prefill"], 1)}))'
