#!/usr/bin/env python3
"""Trains the demo text model: a small GPT-2 on the public-domain Shakespeare corpus.

Writes models/shakespeare/ in the Hugging Face GPT-2 layout (config.json, model.safetensors,
vocab.json, merges.txt) plus our model.json manifest. Its byte-level BPE vocabulary is trained
here too (1,024 tokens). CPU only, Debian's python3-torch with transformers/tokenizers in a venv:

    /opt/venv-ref/bin/python tools/train_shakespeare.py [../shared/data/tinyshakespeare.txt] [--steps N]
"""
import argparse
import json
import math
import os
import time

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "models", "shakespeare")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(2026)
    torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)

    text = open(args.corpus, encoding="utf-8").read()
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator([text], vocab_size=1024, min_frequency=2, special_tokens=["<|endoftext|>"])
    tokenizer.save_model(OUT)
    ids = torch.tensor(tokenizer.encode(text).ids, dtype=torch.long)
    split = int(len(ids) * 0.95)
    train, valid = ids[:split], ids[split:]
    vocab = tokenizer.get_vocab_size()
    print(f"corpus {len(text)} chars -> {len(ids)} tokens, vocabulary {vocab}")

    block = 128
    config = GPT2Config(vocab_size=vocab, n_positions=block, n_embd=128, n_layer=4, n_head=4,
                        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    print("parameters", sum(p.numel() for p in model.parameters()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1, betas=(0.9, 0.95))
    batch = 16

    def batch_of(data):
        starts = torch.randint(0, len(data) - block - 1, (batch,))
        x = torch.stack([data[s:s + block] for s in starts])
        return x

    def lr_at(step):
        warmup = 100
        if step < warmup:
            return 2e-3 * step / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return 2e-4 + 0.5 * (2e-3 - 2e-4) * (1 + math.cos(math.pi * progress))

    start = time.time()
    for step in range(args.steps + 1):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        x = batch_of(train)
        loss = model(x, labels=x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0:
            model.eval()
            with torch.no_grad():
                losses = []
                for _ in range(4):
                    v = batch_of(valid)
                    losses.append(model(v, labels=v).loss.item())
                valid_loss = sum(losses) / len(losses)
            print(f"step {step} train {loss.item():.3f} valid {valid_loss:.3f} ({time.time() - start:.0f}s)", flush=True)

    model.eval()
    # Stored as float16 (half the bytes in the repository); the engine widens to float32 at load.
    model.half().save_pretrained(OUT, safe_serialization=True)
    model.float()
    for extra in ("generation_config.json",):
        path = os.path.join(OUT, extra)
        if os.path.exists(path):
            os.remove(path)
    manifest = {
        "engine": "transformer-lm",
        "task": "text-generation",
        "display_name": "Shakespeare GPT-2 (demo, %dk parameters)" % (sum(p.numel() for p in model.parameters()) // 1000),
        "version": "1",
        "context_length": block,
        "files": {"weights": "model.safetensors", "config": "config.json", "vocab": "vocab.json", "merges": "merges.txt"},
        "defaults": {"max_tokens": 64, "temperature": 0.8},
        "visibility": "public",
    }
    with open(os.path.join(OUT, "model.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    with torch.no_grad():
        prompt = torch.tensor([tokenizer.encode("ROMEO:").ids])
        sample = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=80, do_sample=True,
                                temperature=0.8, top_k=0, pad_token_id=0)
        print(tokenizer.decode(sample[0].tolist()))


if __name__ == "__main__":
    main()
