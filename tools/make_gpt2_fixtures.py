#!/usr/bin/env python3
"""Reference fixtures for the Transformer LM engine, from Hugging Face transformers.

Writes Tests/InferenceTests/Fixtures/tiny-gpt2/: a tiny random GPT-2 (config.json,
model.safetensors) and reference.json with logits and greedy continuations computed by
transformers' GPT2LMHeadModel on CPU. Run with a venv holding Debian's python3-torch and
transformers 4.x (see ../shared/docs/BUILD-NOTES.md):

    /opt/venv-ref/bin/python tools/make_gpt2_fixtures.py
"""
import json
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "InferenceTests", "Fixtures", "tiny-gpt2")


def main():
    torch.manual_seed(1234)
    config = GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                        initializer_range=0.2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    model = GPT2LMHeadModel(config).eval()
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    for extra in ("generation_config.json",):
        path = os.path.join(OUT, extra)
        if os.path.exists(path):
            os.remove(path)

    prompts = [[1, 2, 3, 4, 5], [100], [511, 0, 255, 17, 17, 17, 42, 300], [7] * 20]
    cases = []
    min_gap = float("inf")
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            logits = model(ids).logits[0]  # [T, V]
            generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False, pad_token_id=0,
                                       eos_token_id=None)[0][len(prompt):].tolist()
            # Margin between the best and second-best logits along the greedy path.
            path = torch.tensor([prompt + generated])
            path_logits = model(path).logits[0][len(prompt) - 1:-1]
            top2 = torch.topk(path_logits, 2, dim=-1).values
            min_gap = min(min_gap, float((top2[:, 0] - top2[:, 1]).min()))
            cases.append({
                "prompt": prompt,
                "logits": [[round(float(v), 6) for v in row] for row in logits.tolist()],
                "greedy": generated,
            })
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump({"source": "transformers GPT2LMHeadModel, torch %s" % torch.__version__,
                   "min_greedy_margin": min_gap, "cases": cases}, f)
    print("wrote", OUT, "min greedy margin", min_gap)


if __name__ == "__main__":
    main()
