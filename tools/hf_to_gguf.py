#!/usr/bin/env python3
"""Writes a Hugging Face Llama-family folder (config.json with model_type llama or qwen2,
model.safetensors in F32/F16/BF16, tokenizer.json + tokenizer_config.json) as one GGUF file, as
llama.cpp's convert_hf_to_gguf.py writes these architectures (which wants a newer torch than
Debian's): its tensor names, q_proj/k_proj rows reordered for `llama`'s rotation, Llama 3's
rope_scaling as the `rope_freqs.weight` factors, matrices in f32, f16 or bf16 (vectors f32), the
byte-level BPE vocabulary with merges and token types, and the chat template. Needs numpy and
llama.cpp's gguf-py (scripts/llama-cpp's python-gguf).

    tools/hf_to_gguf.py MODEL_DIR OUT.gguf [f32|f16|bf16] [--vocab ggml-vocab-NAME.gguf]

--vocab takes the vocabulary from a llama.cpp vocabulary file instead of tokenizer.json (the
benchmark's random models, bench/llama_shapes.py), padded or cut to the model's vocab_size.
"""
import json
import math
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, LlamaFileType, TokenType
from gguf.quants import quantize


def safetensors(path):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[8 + size + start:8 + size + end]
        if info["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype={"F32": np.float32, "F16": np.float16}[info["dtype"]]).astype(np.float32)
        yield name, array.reshape(info["shape"])


def permute(weights, heads):
    """convert_hf_to_gguf.py's LlamaModel.permute: a head's two halves -> interleaved pairs."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def llama3_factors(config):
    """convert_hf_to_gguf.py's rope_freqs for rope_type llama3: one divisor per frequency."""
    scaling = config["rope_scaling"]
    head = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    base = config.get("rope_theta", 10000.0)
    freqs = 1.0 / (base ** (np.arange(0, head, 2, dtype=np.float32) / head))
    factor, low, high = scaling.get("factor", 8.0), scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    original = scaling.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = original / low, original / high
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def field(reader, key):
    value = reader.fields[key]
    return value.contents() if hasattr(value, "contents") else [bytes(value.parts[i]).decode() for i in value.data]


def vocabulary(folder, size, vocab_file):
    """(tokens, token types, merges, pre-tokenizer name, bos id, eos id, chat template)."""
    if vocab_file:
        reader = GGUFReader(vocab_file)
        tokens, types, merges = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type"), field(reader, "tokenizer.ggml.merges")
        if len(tokens) < size:
            tokens += [f"[PAD{i}]" for i in range(len(tokens), size)]
            types += [TokenType.USER_DEFINED] * (size - len(types))
        kept = set(tokens[:size])
        merges = [m for m in merges if all(part in kept for part in m.split(" ")) and m.replace(" ", "") in kept]
        return tokens[:size], types[:size], merges, field(reader, "tokenizer.ggml.pre"), 0, 0, None
    tokenizer = json.load(open(os.path.join(folder, "tokenizer.json"), encoding="utf-8"))
    config = json.load(open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8"))
    ids = dict(tokenizer["model"]["vocab"])
    special = set()
    for added in tokenizer.get("added_tokens", []):
        ids[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["content"])
    count = max(size, max(ids.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(count)]
    types = [TokenType.UNUSED] * count
    for token, index in ids.items():
        tokens[index] = token
        types[index] = TokenType.CONTROL if token in special else TokenType.USER_DEFINED if token not in tokenizer["model"]["vocab"] else TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]

    def token_id(name):
        value = config.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        return ids.get(value) if value is not None else None

    # The split pattern llama.cpp knows this pre-tokenizer by: GPT-2's for a plain ByteLevel.
    pre_tokenizer = tokenizer.get("pre_tokenizer") or {}
    pre = "gpt-2" if pre_tokenizer.get("type") == "ByteLevel" else "qwen2" if "qwen" in folder.lower() else "llama-bpe"
    return tokens, types, merges, pre, token_id("bos_token"), token_id("eos_token"), config.get("chat_template")


def write(folder, out, outtype="f32", vocab_file=None):
    config = json.load(open(os.path.join(folder, "config.json")))
    arch = {"llama": "llama", "qwen2": "qwen2"}[config["model_type"]]
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    writer = GGUFWriter(out + ".partial", arch)
    writer.add_name(os.path.basename(os.path.normpath(folder)))
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_rope_dimension_count(config.get("head_dim", config["hidden_size"] // heads))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type({"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "bf16": LlamaFileType.MOSTLY_BF16}[outtype])
    tokens, types, merges, pre, bos, eos, template = vocabulary(folder, config["vocab_size"], vocab_file)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if bos is not None:
        writer.add_bos_token_id(bos)
    if eos is not None:
        writer.add_eos_token_id(eos)
    if template:
        writer.add_chat_template(template)
    scaling = config.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_factors(config))
    elif scaling.get("rope_type", scaling.get("type")) == "linear":
        writer.add_rope_scaling_type("linear")
        writer.add_rope_scaling_factor(scaling["factor"])

    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    for name, array in safetensors(os.path.join(folder, "model.safetensors")):
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        if name in names:
            target = names[name]
        else:
            _, _, layer, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            target = f"blk.{layer}.{parts[module]}.{kind}"
            if arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                array = permute(array, heads if module == "self_attn.q_proj" else kv)
        add_tensor(writer, target, array, outtype)
    finish(writer, out)


def add_tensor(writer, target, array, outtype):
    """Matrices in `outtype` (f32, f16 or bf16), vectors in f32, as convert_hf_to_gguf.py's --outtype."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if outtype == "bf16" and array.ndim == 2:
        writer.add_tensor(target, quantize(array, GGMLQuantizationType.BF16), raw_dtype=GGMLQuantizationType.BF16)
    elif outtype == "f16" and array.ndim == 2:
        writer.add_tensor(target, array.astype(np.float16))
    else:
        writer.add_tensor(target, array)


def finish(writer, out):
    """Writes the file (opened as OUT.partial) and moves it into place whole."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(out + ".partial", out)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    vocab = None
    if "--vocab" in arguments:
        index = arguments.index("--vocab")
        vocab = arguments[index + 1]
        del arguments[index:index + 2]
    write(arguments[0], arguments[1], arguments[2] if len(arguments) > 2 else "f32", vocab)
