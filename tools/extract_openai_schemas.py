#!/usr/bin/env python3
"""The response schemas of OpenAI's published OpenAPI document that ModelGate's answers must
satisfy, with every schema they reference, as one JSON file for the end-to-end schema test.

    python3 tools/extract_openai_schemas.py openapi.yaml > Tests/EndToEndTests/Fixtures/openai-response-schemas.json

openapi.yaml is the file of github.com/openai/openai-openapi (the commit is recorded in the
output's "source" field when given as a second argument).
"""
import json
import sys

import yaml

ROOTS = [
    "CreateCompletionResponse", "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
    "CreateEmbeddingResponse", "ListModelsResponse", "Model", "ErrorResponse",
]


def references(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            references(value, found)
    elif isinstance(node, list):
        for value in node:
            references(value, found)


def main():
    with open(sys.argv[1]) as handle:
        document = yaml.safe_load(handle)
    schemas = document["components"]["schemas"]
    wanted, queue = set(), list(ROOTS)
    while queue:
        name = queue.pop()
        if name in wanted:
            continue
        wanted.add(name)
        found = set()
        references(schemas[name], found)
        queue.extend(found - wanted)
    out = {
        "source": "openai/openai-openapi openapi.yaml" + (" at " + sys.argv[2] if len(sys.argv) > 2 else ""),
        "roots": ROOTS,
        "components": {"schemas": {name: schemas[name] for name in sorted(wanted)}},
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
