#!/usr/bin/env python3
"""Writes a Llama-family model of a published shape with seeded random weights, twice: as a
Hugging Face folder (config.json, model.safetensors in float32) for ModelGate, and as GGUF files
for llama.cpp written from those very weights by tools/hf_to_gguf.py with llama.cpp's own gguf-py
(float32, and bf16 with matrices in bfloat16 and vectors in float32, as convert_hf_to_gguf.py's
`--outtype bf16`). Needs numpy and gguf-py (scripts/llama-cpp's python-gguf).

    bench/llama_shapes.py SHAPE OUT_DIR VOCAB_DIR     SHAPE: smollm2-135m | qwen2.5-0.5b | tiny-256

VOCAB_DIR is the sdist's models/ folder: the vocabulary stored in the GGUF files is a real one
(Qwen2's for the Qwen shape; GPT-2's first 49,152 tokens for SmolLM2's, whose own is not in the
sdist), so llama.cpp loads them as it would a converted model. The benchmark never tokenizes.
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import hf_to_gguf  # noqa: E402  (tools/hf_to_gguf.py: the same conversion the GGUF tests use)

SHAPES = {
    # HuggingFaceTB/SmolLM2-135M config.json
    "smollm2-135m": dict(architecture="llama", model_type="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, vocabulary="gpt-2"),
    # Qwen/Qwen2.5-0.5B config.json
    "qwen2.5-0.5b": dict(architecture="qwen2", model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768,
                         rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, vocabulary="qwen2"),
    # Not a published shape: the smallest whose rows are whole K-quant blocks (256), with an
    # untied output head, for the quantized-GGUF tests (llama-quantize runs on it in seconds).
    "tiny-256": dict(architecture="llama", model_type="llama", hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, intermediate_size=512, vocab_size=1024, max_position_embeddings=512,
                     rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, vocabulary="gpt-2"),
}


def tensors(shape, seed):
    """(name, float32 array) in Hugging Face naming, seeded; matrices ~ N(0, 0.02), norms ~ 1."""
    rng = np.random.default_rng(seed)
    c, h, kv, inner = shape["hidden_size"], shape["num_attention_heads"], shape["num_key_value_heads"], shape["intermediate_size"]
    d = c // h

    def matrix(rows, columns):
        return (rng.standard_normal((rows, columns), dtype=np.float32) * 0.02).astype(np.float32)

    def norm(count):
        return (1 + 0.1 * rng.standard_normal(count, dtype=np.float32)).astype(np.float32)

    yield "model.embed_tokens.weight", matrix(shape["vocab_size"], c)
    for layer in range(shape["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        yield p + "input_layernorm.weight", norm(c)
        yield p + "self_attn.q_proj.weight", matrix(h * d, c)
        yield p + "self_attn.k_proj.weight", matrix(kv * d, c)
        yield p + "self_attn.v_proj.weight", matrix(kv * d, c)
        if shape["model_type"] == "qwen2":
            yield p + "self_attn.q_proj.bias", matrix(1, h * d)[0]
            yield p + "self_attn.k_proj.bias", matrix(1, kv * d)[0]
            yield p + "self_attn.v_proj.bias", matrix(1, kv * d)[0]
        yield p + "self_attn.o_proj.weight", matrix(c, h * d)
        yield p + "post_attention_layernorm.weight", norm(c)
        yield p + "mlp.gate_proj.weight", matrix(inner, c)
        yield p + "mlp.up_proj.weight", matrix(inner, c)
        yield p + "mlp.down_proj.weight", matrix(c, inner)
    yield "model.norm.weight", norm(c)
    if not shape["tie_word_embeddings"]:
        yield "lm_head.weight", matrix(shape["vocab_size"], c)


def write_safetensors(path, shape, seed):
    header, offset = {}, 0
    for name, array in tensors(shape, seed):
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path + ".partial", "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for _, array in tensors(shape, seed):
            f.write(array.tobytes())
    os.replace(path + ".partial", path)


def main():
    name, out, vocab_dir = sys.argv[1:4]
    shape, seed = SHAPES[name], sum(name.encode())
    os.makedirs(out, exist_ok=True)
    config = {k: v for k, v in shape.items() if k not in ("architecture", "vocabulary")}
    config |= {"architectures": ["LlamaForCausalLM" if shape["model_type"] == "llama" else "Qwen2ForCausalLM"], "hidden_act": "silu",
               "torch_dtype": "float32"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump({"engine": "transformer-lm"}, f)
    write_safetensors(os.path.join(out, "model.safetensors"), shape, seed)
    vocab = os.path.join(vocab_dir, f"ggml-vocab-{shape['vocabulary']}.gguf")
    hf_to_gguf.write(out, os.path.join(out, "model-f32.gguf"), "f32", vocab)
    hf_to_gguf.write(out, os.path.join(out, "model-bf16.gguf"), "bf16", vocab)


if __name__ == "__main__":
    main()
