"""Drives a running ModelGate with the official `openai` Python package.

Usage: python openai_client_check.py BASE_URL KEY LIMITED_KEY [EMBEDDING_MODEL]
Exits non-zero (with the failing check) when anything is off.
"""
import base64
import struct
import sys

import openai
from openai import OpenAI

base, key, limited = sys.argv[1], sys.argv[2], sys.argv[3]
embedding_model = sys.argv[4] if len(sys.argv) > 4 else ""
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
checks = []


def check(name, condition, detail=""):
    checks.append(name)
    if not condition:
        print(f"FAILED {name}: {detail}")
        sys.exit(1)


models = [m.id for m in client.models.list()]
check("models.list", "shakespeare" in models and "private-lm" not in models, models)
check("models.retrieve", client.models.retrieve("shakespeare").id == "shakespeare")

completion = client.completions.create(model="shakespeare", prompt="ROMEO:", max_tokens=8, temperature=0.7, seed=3)
check("completion", completion.object == "text_completion" and len(completion.choices) == 1, completion)
check("completion usage", completion.usage.completion_tokens == 8 and completion.usage.prompt_tokens > 0, completion.usage)
again = client.completions.create(model="shakespeare", prompt="ROMEO:", max_tokens=8, temperature=0.7, seed=3)
check("seeded completions repeat", again.choices[0].text == completion.choices[0].text)

multi = client.completions.create(model="shakespeare", prompt=["A", "B"], max_tokens=3, n=2, logprobs=2)
check("prompts x n choices", sorted(c.index for c in multi.choices) == [0, 1, 2, 3], multi.choices)
check("logprobs", len(multi.choices[0].logprobs.tokens) == 3 and len(multi.choices[0].logprobs.top_logprobs[0]) == 2)

chat = client.chat.completions.create(model="shakespeare", messages=[{"role": "user", "content": "Speak."}], max_tokens=6)
check("chat", chat.object == "chat.completion" and chat.choices[0].message.role == "assistant", chat)
check("chat finish", chat.choices[0].finish_reason in ("stop", "length"))

chunks = list(client.chat.completions.create(model="shakespeare", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                                             stream=True, stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
usage = [c.usage for c in chunks if c.usage]
check("chat stream", len(chunks) >= 3 and usage and usage[0].completion_tokens == 5, chunks[-1])
stream = list(client.completions.create(model="shakespeare", prompt="KING:", max_tokens=4, stream=True))
check("completion stream", any(c.choices and c.choices[0].finish_reason == "length" for c in stream))

if embedding_model:
    vectors = client.embeddings.create(model=embedding_model, input=["hello world", "goodbye"])
    check("embeddings", len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384, vectors.usage)
    b64 = client.embeddings.create(model=embedding_model, input="hello world", encoding_format="base64")
    raw = b64.data[0].embedding
    values = struct.unpack("<384f", base64.b64decode(raw)) if isinstance(raw, str) else raw
    check("embeddings base64", abs(values[0] - vectors.data[0].embedding[0]) < 1e-6, values[:3])

try:
    OpenAI(base_url=base + "/v1", api_key="mgk_wrong", max_retries=0).models.list()
    check("AuthenticationError", False)
except openai.AuthenticationError:
    check("AuthenticationError", True)
try:
    client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    check("NotFoundError", False)
except openai.NotFoundError as error:
    check("NotFoundError", error.code == "model_not_found", error)
try:
    client.completions.create(model="shakespeare", prompt="x", max_tokens=1, temperature=5)
    check("BadRequestError", False)
except openai.BadRequestError as error:
    check("BadRequestError", error.param == "temperature", error)
limited_client = OpenAI(base_url=base + "/v1", api_key=limited, max_retries=0)
limited_client.completions.create(model="shakespeare", prompt="x", max_tokens=1)
try:
    limited_client.completions.create(model="shakespeare", prompt="x", max_tokens=1)
    check("RateLimitError", False)
except openai.RateLimitError as error:
    check("RateLimitError", error.code == "rate_limit_exceeded", error)
print("OK", len(checks), "checks")
