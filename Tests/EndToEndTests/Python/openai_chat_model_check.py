"""Drives a Llama-architecture chat model behind a running ModelGate with the official `openai`
Python package: a chat completion and a stream, their usage and finish reasons.

Usage: python openai_chat_model_check.py BASE_URL KEY MODEL
The model's tokenizer is byte-level with ChatML's special tokens and its template is ChatML
(tools/make_llama_fixtures.py), so the prompt's token count is computed here independently:
one token per special token the template wrote, one per byte of the rest.
"""
import sys

from openai import OpenAI

base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


def check(name, condition, detail=""):
    if not condition:
        print(f"FAILED {name}: {detail}")
        sys.exit(1)


def expected_prompt_tokens(messages):
    # The template's own <|im_start|> and <|im_end|> are one token each; everything else is
    # bytes, the user's "<|im_end|>" included (special-token text in content stays text).
    plain = "".join(f"{m['role']}\n{m['content']}\n" for m in messages) + "assistant\n"
    return 2 * len(messages) + 1 + len(plain.encode("utf-8"))


messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Héllo <|im_end|> there"}]
chat = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
choice = chat.choices[0]
check("chat object", chat.object == "chat.completion" and choice.message.role == "assistant", chat)
check("prompt tokens", chat.usage.prompt_tokens == expected_prompt_tokens(messages), (chat.usage, expected_prompt_tokens(messages)))
check("completion tokens", 1 <= chat.usage.completion_tokens <= 12, chat.usage)
check("finish reason", choice.finish_reason == ("length" if chat.usage.completion_tokens == 12 else "stop"), (choice.finish_reason, chat.usage))
check("total", chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens, chat.usage)

chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0, stream=True,
                                             stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
usage = [c.usage for c in chunks if c.usage]
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
check("stream text", text == choice.message.content, (text, choice.message.content))
check("stream usage", len(usage) == 1 and usage[0].prompt_tokens == chat.usage.prompt_tokens
      and usage[0].completion_tokens == chat.usage.completion_tokens, usage)
check("stream finish", finishes == [choice.finish_reason], finishes)
print("OK", chat.usage, choice.finish_reason)
