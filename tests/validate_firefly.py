#!/usr/bin/env python3
"""Independent check of firefly datagrams (one per stdin line) for the integration tests.

1. The JSON body validates against tests/data/spec/firefly.schema.json (draft 2020-12,
   with the format checker on; the schema's trailing commas are removed first).
2. The datagram matches an emulation of the firefly-collector logstash grok (SPEC §4):
   a datagram that does not match is dropped by the collector.
3. Every time is UTC with exactly six fraction digits and +00:00 (SPEC §1.4).
Exit status 0 when every datagram passes; otherwise each failure is printed.
"""
import json
import pathlib
import re
import sys

import jsonschema

here = pathlib.Path(__file__).resolve().parent
schema_path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here / "data/spec/firefly.schema.json"
raw = schema_path.read_text()
schema = json.loads(re.sub(r",(\s*[}\]])", r"\1", raw))
validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"
GROK = re.compile(
    r"^<(?P<pri>\d+)>(?P<ver>\d+) *(?:-|(?P<ts>" + ISO + r")) *(?:-|(?P<host>[0-9A-Za-z._:-]+))"
    r" *(?P<app>[!-~]+|-) *(?:-|(?P<procid>[!-~]+)) *(?:-|(?P<msgid>[!-~]+)) *(?:-|(?P<sd>\[.*?\]))(?: *(?P<json>\{.*\})|)$"
)
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")

failures = 0
count = 0
for line in sys.stdin.read().splitlines():
    if not line.strip():
        continue
    count += 1
    errs = []
    m = GROK.match(line)
    if not m or not m.group("json") or not m.group("ts"):
        errs.append("collector grok: no match")
    body = line[line.index("{"):] if "{" in line else ""
    try:
        doc = json.loads(body)
        errs.extend(e.message for e in validator.iter_errors(doc))
        lc = doc.get("flow-lifecycle", {})
        for k in ("current-time", "start-time", "end-time"):
            if k in lc and not TIME.match(str(lc[k])):
                errs.append(f"{k} {lc[k]!r} is not UTC with 6 digits")
        if m and m.group("ts") and not TIME.match(m.group("ts")):
            errs.append("syslog timestamp is not UTC with 6 digits")
    except ValueError as e:
        errs.append(f"JSON: {e}")
    if errs:
        failures += 1
        print(f"FAIL: {line}\n  " + "\n  ".join(errs))
print(f"{count} checked, {failures} failed")
sys.exit(1 if failures or count == 0 else 0)
