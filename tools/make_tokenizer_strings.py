#!/usr/bin/env python3
"""Writes Tests/InferenceTests/Fixtures/tokenizer-strings.json: 200 strings that the tokenizer
tests encode with ModelGate and with Hugging Face `tokenizers` (tools/tokenizer_reference.py).
Hand-picked cases first (Unicode forms, emoji, whitespace, digits, code, special-token text),
then seeded random mixtures of the same ingredients. Rerunning writes the same file."""
import json
import random
import unicodedata
from pathlib import Path

HAND = [
    "Hello world", " Hello world", "Hello  world", "Hello\tworld", "Hello\nworld", "Hello\r\nworld", "Hello\n\n\nworld",
    "   leading spaces", "trailing spaces   ", "  ", "\n", "\t\t", " \n \n ", "a\u00a0b", "a\u3000b", "a\u2003b\u2009c",
    "It's I'm we'll they're you've she'd can't", "IT'S I'M WE'LL THEY'RE YOU'VE SHE'D", "'s 't 'RE", "don''t",
    "1", "12", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "-42", "0x1F", "v1.2.3", "2026-12-07T12:00:00Z",
    "٣٤٥ Arabic-Indic digits", "Ⅻ Roman numeral", "½ ¾ ²³",
    "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9"), "\u212b ångström \u00c5", "\u1e9b\u0323", "ﬁ ligature",
    "\u226f", ">\u0338", "한국어 텍스트", unicodedata.normalize("NFD", "한국어 텍스트"), "日本語のテキストです。", "中文测试：你好，世界！",
    "Ελληνικά κείμενο", "Русский текст, ёж.", "עברית", "العربية نص", "हिन्दी पाठ", "ภาษาไทย", "Tiếng Việt có dấu",
    "🦙", "🦙.cpp", "👩‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "👍🏽 skin tone", "emoji🙂inside🙂words", "🇩🇪🇫🇷",
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "    indented\n\tmixed",
    "<html><body class=\"x\">&amp;</body></html>", "SELECT * FROM t WHERE a = 'b';", "https://example.com/a?b=c&d=e#f",
    "user@example.com", "C:\\Program Files\\x", "$HOME/.config", "a||b&&c", "x+=1; y-=2; z*=3",
    "<|im_end|>", "<|im_start|>system\nhi<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>",
    "<s>", "</s>", "<unk>", "[INST] hi [/INST]", "<<SYS>>\nsys\n<</SYS>>", "<|im_end", "im_end|>", "<0x41>",
    "\u0000\u0001\u001f", "\u200b zero width", "\ufeffBOM", "a\u0301\u0302\u0303", "\u00ad soft hyphen", "\U0001d400 math bold",
    "", "a", " ", "!", "!!!", "...", "?!?!", " !", "\n!", "«quotes» “curly” ‘single’", "— dash – en", "¿Qué? ¡Sí!",
]

PARTS = ["hello", "World", " ", "  ", "\n", "\t", "123", "4567", "'s", "'LL", "é", "e\u0301", "🦙", "👍🏽", "日本", "한", "ü",
         "!", "?!", "(", ")", "{}", "<|im_end|>", "</s>", "<s>", "\r\n", "\u00a0", "x", "Ω", "½", "--", "==", "\"", "`code`"]


def main():
    rng = random.Random(20261207)
    strings = list(HAND)
    while len(strings) < 200:
        strings.append("".join(rng.choice(PARTS) for _ in range(rng.randint(2, 12))))
    out = Path(__file__).resolve().parent.parent / "Tests/InferenceTests/Fixtures/tokenizer-strings.json"
    out.write_text(json.dumps(strings, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"{len(strings)} strings -> {out}")


if __name__ == "__main__":
    main()
