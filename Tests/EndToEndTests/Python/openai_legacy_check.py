"""The seed's own sample code, verbatim but for api_base and api_key, with the openai 0.x
client (0.28): it calls POST /v1/engines/text-davinci-002/completions.

Usage: python openai_legacy_check.py BASE_URL KEY
"""
import sys

import openai

openai.api_base = sys.argv[1] + "/v1"
openai.api_key = sys.argv[2]

response = openai.Completion.create(
    engine="text-davinci-002",
    prompt="What is the capital of France?",
    temperature=0.5,
    max_tokens=50,
    top_p=1,
    frequency_penalty=0,
    presence_penalty=0,
)
print(response.choices[0].text)

# What the 0.x client reads back, and its engine listing.
print("MODEL", response.model, "USAGE", response.usage.completion_tokens)
print("ENGINES", sorted(engine.id for engine in openai.Engine.list().data))
print("OK")
