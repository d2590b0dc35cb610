#!/usr/bin/env python3
"""Renders chat templates as transformers' apply_chat_template(..., add_generation_prompt=True)
does, for the chat-template tests to compare ModelGate's renderer with.

    chat_template_reference.py CASES.json OUT.json

CASES.json: {"date": "YYYY-MM-DD", "conversations": [[{"role", "content"}...]...],
             "templates": [{"name", "path", "special_tokens": {"bos_token": ..., "eos_token": ...}}]}
OUT.json:   {name: [{"text": ...} or {"error": ...} per conversation]}

The environment is transformers' own: Jinja2's ImmutableSandboxedEnvironment with trim_blocks
and lstrip_blocks, loop controls, `tojson` as json.dumps(ensure_ascii=False), and the globals
raise_exception and strftime_now (here fixed to the given date); `tools` and `documents` are None.
"""
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


def main(cases_path, out_path):
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    now = datetime.strptime(cases["date"], "%Y-%m-%d")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: now.strftime(fmt)
    results = {}
    for template in cases["templates"]:
        with open(template["path"], encoding="utf-8") as f:
            compiled = env.from_string(f.read())
        rendered = []
        for messages in cases["conversations"]:
            try:
                text = compiled.render(messages=messages, tools=None, documents=None, add_generation_prompt=True,
                                       **template["special_tokens"])
                rendered.append({"text": text})
            except jinja2.exceptions.TemplateError as error:
                rendered.append({"error": str(error)})
        results[template["name"]] = rendered
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=False)


if __name__ == "__main__":
    main(*sys.argv[1:3])
