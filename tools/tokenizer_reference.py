#!/usr/bin/env python3
"""Reference tokenizations from Hugging Face `tokenizers` for a llama.cpp vocabulary.

    tokenizer_reference.py VOCAB.gguf OUT_DIR STRINGS.json

Writes OUT_DIR/tokenizer.json (+ tokenizer_config.json), the Hugging Face form of the GGUF
file's vocabulary (as transformers' converters write it: byte-level BPE with the model's split
pattern, or SentencePiece-style BPE with byte fallback and merges ordered by score), and
OUT_DIR/expected.json: each string's ids as `tokenizers` encodes user text (no special tokens
added, special-token text kept as text). The Swift tests load both the GGUF file and this
tokenizer.json and must give the same ids. Needs `gguf` (llama.cpp's gguf-py) and `tokenizers`.
"""
import json
import sys

from gguf import GGUFReader
from tokenizers import Tokenizer

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def main(gguf_path, out_dir, strings_path):
    reader = GGUFReader(gguf_path)
    kind = field(reader, "tokenizer.ggml.model")
    pre = field(reader, "tokenizer.ggml.pre")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    added_ids = [i for i, t in enumerate(types) if t in (2, 3, 4)]
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] != 4} for i in added_ids]
    vocab = {}
    for i, token in enumerate(tokens):
        if i not in set(added_ids) or kind == "llama":
            vocab.setdefault(token, i)
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
             "vocab": vocab}
    normalizer = None
    decoder = None
    if kind == "gpt2":
        model["merges"] = field(reader, "tokenizer.ggml.merges")
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
        if pre in ("llama-bpe", "llama3", "llama-v3"):
            model["ignore_merges"] = True
            pre_tokenizer = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated", "invert": False}, byte_level]}
        elif pre == "qwen2":
            normalizer = {"type": "NFC"}
            pre_tokenizer = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2}, "behavior": "Isolated", "invert": False}, byte_level]}
        elif pre == "gpt-2":
            pre_tokenizer = dict(byte_level, use_regex=True)
        else:
            sys.exit(f"unsupported tokenizer.ggml.pre {pre!r}")
        decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    elif kind == "llama":
        scores = field(reader, "tokenizer.ggml.scores")
        # transformers' SentencePieceExtractor: every split of every piece into two pieces of the
        # vocabulary, ordered by the piece's score (then the parts' ids).
        merges = []
        for piece, score in sorted(((t, s) for t, s in zip(tokens, scores)), key=lambda x: vocab[x[0]]):
            local = [(piece[:k], piece[k:], score) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
            merges += sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.sort(key=lambda m: m[2], reverse=True)
        model.update(merges=[[a, b] for a, b, _ in merges], byte_fallback=True, fuse_unk=True, unk_token="<unk>")
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        pre_tokenizer = None
        decoder = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    else:
        sys.exit(f"unsupported tokenizer.ggml.model {kind!r}")
    document = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": normalizer,
                "pre_tokenizer": pre_tokenizer, "post_processor": None, "decoder": decoder, "model": model}
    with open(f"{out_dir}/tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False)
    bos, eos = field(reader, "tokenizer.ggml.bos_token_id"), field(reader, "tokenizer.ggml.eos_token_id")
    config = {"bos_token": tokens[bos] if bos is not None else None, "eos_token": tokens[eos] if eos is not None else None}
    with open(f"{out_dir}/tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False)

    tokenizer = Tokenizer.from_file(f"{out_dir}/tokenizer.json")
    tokenizer.encode_special_tokens = True  # user text: special tokens' text is text
    with open(strings_path, encoding="utf-8") as f:
        strings = json.load(f)
    expected = [tokenizer.encode(s, add_special_tokens=False).ids for s in strings]
    with open(f"{out_dir}/expected.json", "w", encoding="utf-8") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
