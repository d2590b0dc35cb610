#!/usr/bin/env python3
"""Writes a Hugging Face GPT-2 folder (config.json, model.safetensors, F32 or F16) as a float32 GGUF file
for llama.cpp, with GPT-2's byte-level BPE vocabulary, so llama.cpp runs the very weights the
gpt2 benchmark runs. Needs numpy and llama.cpp's own gguf-py package (on PYTHONPATH).

    bench/gguf_gpt2.py MODEL_DIR VOCAB_DIR OUT.gguf [bf16]     (VOCAB_DIR: vocab.json, merges.txt)

Tensor names and the Conv1D transposes follow llama.cpp's convert_hf_to_gguf.py for GPT-2; with
`bf16`, matrices are stored as bfloat16 and vectors as float32, as its `--outtype bf16` does.
"""
import json
import os
import sys

from gguf import GGUFWriter, LlamaFileType, TokenType

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from hf_to_gguf import add_tensor, finish, safetensors  # noqa: E402  (the reader and writing of tools/hf_to_gguf.py)


def main():
    model, vocab_dir, out = sys.argv[1:4]
    bf16 = sys.argv[4:5] == ["bf16"]
    config = json.load(open(model + "/config.json"))
    writer = GGUFWriter(out + ".partial", "gpt2")
    writer.add_name("ModelGate bench GPT-2")
    writer.add_block_count(config["n_layer"])
    writer.add_context_length(config["n_positions"])
    writer.add_embedding_length(config["n_embd"])
    writer.add_feed_forward_length(4 * config["n_embd"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config.get("layer_norm_epsilon", 1e-5))
    writer.add_file_type(LlamaFileType.MOSTLY_BF16 if bf16 else LlamaFileType.ALL_F32)

    vocab = json.load(open(vocab_dir + "/vocab.json"))
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    if len(tokens) != config["vocab_size"]:
        raise SystemExit(f"vocabulary of {len(tokens)} tokens, the model has {config['vocab_size']}")
    merges = [line.rstrip("\n") for line in open(vocab_dir + "/merges.txt", encoding="utf-8") if line.strip() and not line.startswith("#")]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if token == "<|endoftext|>" else TokenType.NORMAL for token in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<|endoftext|>"])
    writer.add_eos_token_id(vocab["<|endoftext|>"])

    names = {"wte.weight": "token_embd.weight", "wpe.weight": "position_embd.weight",
             "ln_f.weight": "output_norm.weight", "ln_f.bias": "output_norm.bias"}
    blocks = {"ln_1": "attn_norm", "ln_2": "ffn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
              "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for name, array in safetensors(model + "/model.safetensors"):
        name = name.removeprefix("transformer.")
        if name.endswith(".attn.bias") or name.endswith(".attn.masked_bias") or name == "lm_head.weight":
            continue  # causal-mask buffers; the output head is tied to wte
        if name.startswith("h."):
            _, layer, rest = name.split(".", 2)
            module, kind = rest.rsplit(".", 1)
            # Conv1D stores [in, out]; GGUF wants [out, in] as convert_hf_to_gguf.py writes it.
            if kind == "weight" and module in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                array = array.T
            target = f"blk.{layer}.{blocks[module]}.{kind}"
        else:
            target = names[name]
        add_tensor(writer, target, array, "bf16" if bf16 else "f32")
    finish(writer, out)


if __name__ == "__main__":
    main()
