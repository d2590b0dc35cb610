#!/usr/bin/env python3
"""Reference fixtures for the Llama family, from Hugging Face transformers.

Writes Tests/InferenceTests/Fixtures/tiny-llama/ and tiny-qwen2/: tiny random models
(config.json, model.safetensors) and reference.json with every position's logits for two
prompts and a 32-token greedy continuation, computed by transformers' LlamaForCausalLM
(grouped-query attention, untied head, Llama 3 rope scaling) and Qwen2ForCausalLM (q/k/v
biases, tied head) on CPU in float32. Norm weights and biases are randomised (transformers
initialises them to ones and zeros). Each folder also gets a byte-level tokenizer.json with
ChatML special tokens and a ChatML chat template, so the gateway can serve it as a chat model.
Run with Debian's python3-torch and transformers 4.44.2 (see ../shared/docs/BUILD-NOTES.md):

    /opt/venv-ref/bin/python tools/make_llama_fixtures.py
"""
import json
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "InferenceTests", "Fixtures")
VOCAB = 320  # 256 byte tokens, ChatML's three specials, the rest unused
PROMPTS = [[1, 100, 7, 250, 33, 64, 65, 66, 200, 12], [255, 3, 3, 3, 90, 17]]
TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def byte_table():
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    mapped = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            mapped.append(256 + extra)
            extra += 1
    return {b: chr(m) for b, m in zip(printable, mapped)}


def write_tokenizer(out):
    table = byte_table()
    vocab = {table[b]: b for b in range(256)}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = [{"id": 256 + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
             for i, t in enumerate(specials)]
    tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
                 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
                 "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
                 "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                           "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []}}
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": None, "eos_token": "<|im_end|>", "chat_template": TEMPLATE}, f)


def build(name, model):
    torch.manual_seed(7)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("norm.weight"):
                parameter.copy_(1 + 0.3 * torch.randn_like(parameter))
            elif parameter_name.endswith(".bias"):
                parameter.copy_(0.5 * torch.randn_like(parameter))
    model.eval()
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    path = os.path.join(out, "generation_config.json")
    if os.path.exists(path):
        os.remove(path)
    write_tokenizer(out)
    reference = {"prompts": []}
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = torch.tensor([prompt])
            logits = model(ids).logits[0]
            generated = model.generate(ids, max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0,
                                       attention_mask=torch.ones_like(ids))[0][len(prompt):]
            reference["prompts"].append({"tokens": prompt, "logits": [[round(v, 6) for v in row.tolist()] for row in logits],
                                         "greedy": generated.tolist()})
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f)
    print(name, "written")


def main():
    torch.manual_seed(1234)
    llama = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=500000.0,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 16},
                        tie_word_embeddings=False, initializer_range=0.2, attention_bias=False)
    build("tiny-llama", LlamaForCausalLM(llama))
    torch.manual_seed(4321)
    qwen = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
                       tie_word_embeddings=True, initializer_range=0.2, use_sliding_window=False)
    build("tiny-qwen2", Qwen2ForCausalLM(qwen))


if __name__ == "__main__":
    main()
