"""Validates ModelGate responses against OpenAI's published response schemas.

Usage: python openai_schema_check.py SCHEMAS.json RESPONSES.json
SCHEMAS.json: Tests/EndToEndTests/Fixtures/openai-response-schemas.json (extracted from
openai/openai-openapi by tools/extract_openai_schemas.py). RESPONSES.json: a list of
[schema name, response body] pairs. Exits non-zero naming every response that fails.
"""
import json
import sys

from jsonschema import Draft202012Validator


def openapi_to_jsonschema(node):
    """OpenAPI 3.0's `nullable: true` as JSON Schema's type list (OpenAI's document mixes both)."""
    if isinstance(node, dict):
        node = {key: openapi_to_jsonschema(value) for key, value in node.items()}
        if node.pop("nullable", False):
            kind = node.get("type")
            if isinstance(kind, str):
                node["type"] = [kind, "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = node["enum"] + [None]
            if "$ref" in node or "allOf" in node or "anyOf" in node or "oneOf" in node:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [openapi_to_jsonschema(value) for value in node]
    return node


def main():
    with open(sys.argv[1]) as handle:
        document = openapi_to_jsonschema(json.load(handle))
    with open(sys.argv[2]) as handle:
        responses = json.load(handle)
    failures = 0
    for name, body in responses:
        schema = {"$ref": "#/components/schemas/" + name, "components": document["components"]}
        errors = sorted(Draft202012Validator(schema).iter_errors(body), key=lambda error: list(error.path))
        for error in errors:
            failures += 1
            print(f"FAILED {name}: {'/'.join(map(str, error.path))}: {error.message}")
    print(f"checked {len(responses)} responses, {failures} violations")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
