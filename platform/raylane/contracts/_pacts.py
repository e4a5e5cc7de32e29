"""Consumer declarations as Pact message pacts (pact-python 4, offline, no broker).

Consumer side: each (consumer, contract) declaration becomes a V4 asynchronous-message
pact whose body has a type matcher per declared field (``double`` -> a number,
``long`` -> an integer, ``map`` -> an object, ...). Provider side: for every
registered version of the contract's subject, a sample event is built from that
schema, validated and round-tripped through the Avro codec, and the Pact verifier
checks it against every pact of that contract. Pact cannot say "string or null" or
"present, any type", so ``?`` and ``any`` fields are left out of the pact body; the
schema-level :func:`raylane.contracts.check_declarations` covers them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from raylane.contracts._builtin import subject_for
from raylane.contracts._codec import Codec
from raylane.contracts._consumers import ConsumerDeclaration
from raylane.contracts._registry import SchemaRegistry

__all__ = ["sample_event", "verify_pacts", "write_pacts"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _matcher(declared: str) -> Any:
    from pact import match

    return {
        "string": match.str("x"),
        "bytes": match.str("x"),
        "enum": match.str("x"),
        "double": match.number(1.5),
        "float": match.number(1.5),
        "long": match.int(1),
        "int": match.int(1),
        "boolean": match.bool(True),
        "map": match.type({}),
        "record": match.type({}),
        "array": match.type([]),
    }.get(declared)


def _body(fields: Mapping[str, str]) -> dict[str, Any]:
    body = {}
    for name, declared in fields.items():
        m = None if declared.endswith("?") else _matcher(declared)
        if m is not None:
            body[name] = m
    return body


def write_pacts(declarations: Iterable[ConsumerDeclaration], out_dir: Path) -> list[Path]:
    """One pact file per (consumer, contract), verified consumer-side, written to `out_dir`."""
    from pact import Pact

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for decl in declarations:
        for contract, fields in decl.reads.items():
            pact = Pact(decl.consumer, contract).with_specification("V4")
            body = _body(fields)
            pact.upon_receiving(f"a {contract} event", "Async").with_body(body, "application/json")
            # the consumer side: the declared fields are there in the pact's example message
            pact.verify(_consumer(set(body)), "Async")
            pact.write_file(out_dir, overwrite=True)
            written.append(out_dir / f"{decl.consumer}-{contract}.json")
    return written


def _consumer(want: set[str]) -> Any:
    """The consumer side's handler: the declared fields are in the pact's example message."""

    def handler(body: Any, metadata: Any) -> None:
        data = json.loads(body) if isinstance(body, (bytes, str)) else body
        missing = want - set(data)
        if missing:
            raise AssertionError(f"example message lacks {sorted(missing)}")

    return handler


def _sample(t: Any, named: dict[str, Any]) -> Any:
    if isinstance(t, list):
        branches = [b for b in t if b != "null"]
        return _sample(branches[0], named) if branches else None
    if isinstance(t, str):
        if t in named:
            return _sample(named[t], named)
        return {
            "null": None,
            "boolean": True,
            "int": 1,
            "long": 1_700_000_000_000,
            "float": 1.5,
            "double": 1.5,
            "bytes": b"x",
            "string": "x",
        }[t]
    kind = t.get("type")
    if kind == "record":
        named[t["name"]] = t
        if t.get("namespace"):
            named[f"{t['namespace']}.{t['name']}"] = t
        return {f["name"]: _sample(f["type"], named) for f in t["fields"]}
    if kind == "enum":
        named[t["name"]] = t
        return t["symbols"][0]
    if kind == "map":
        return {"k": _sample(t["values"], named)}
    if kind == "array":
        return [_sample(t["items"], named)]
    if kind == "fixed":
        return b"\0" * int(t["size"])
    return _sample(kind, named)


def sample_event(registry: SchemaRegistry, subject: str, version: int) -> dict[str, Any]:
    """A sample event of one registered version, validated and round-tripped by its codec."""
    schema = json.loads(registry.get_version(subject, version).text)
    codec = Codec(subject, registry, version=version)
    return codec.decode(codec.encode(_sample(schema, {})))


def _handler(body: bytes) -> Any:
    # pact passes the arguments by name: the message description and its metadata
    def handler(name: str, metadata: Any) -> dict[str, Any]:
        return {"contents": body, "metadata": None, "content_type": "application/json"}

    return handler


def verify_pacts(registry: SchemaRegistry, pact_dir: Path, contracts: Iterable[str]) -> list[str]:
    """Verify every pact in `pact_dir` against a sample of every registered version; failures."""
    from pact import Verifier

    failures = []
    for contract in sorted(set(contracts)):
        subject = subject_for(contract)
        files = [
            p
            for p in pact_dir.glob("*.json")
            if json.loads(p.read_text())["provider"]["name"] == contract
        ]
        for version in registry.versions(subject):
            body = json.dumps(sample_event(registry, subject, version), default=str).encode()

            verifier = Verifier(contract).message_handler(_handler(body))
            for f in files:
                verifier.add_source(f)
            try:
                verifier.verify()
            except RuntimeError:
                text = _ANSI.sub("", verifier.output())
                detail = [
                    ln.strip()
                    for ln in text.splitlines()
                    if "->" in ln or re.match(r"\s*\d+\) Verifying a pact between", ln)
                ]
                failures.append(f"{subject} v{version}: " + " | ".join(detail))
    return failures
