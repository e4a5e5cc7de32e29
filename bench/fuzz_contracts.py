"""A long fuzz run of the contract codecs: random and mutated bytes, random dicts.

Run on demand: ``.venv/bin/python bench/fuzz_contracts.py [N] [SEED]`` (default 100,000
inputs, seed 0). Every input goes through ``Codec.decode`` (bytes) or ``Codec.encode``
(dicts) of a contract picked at random, v1 and v2 readers of payments.initiated included.
Only typed ContractErrors may escape; anything else is counted as a crash and printed.
Prints the count, outcomes by error class and generator, the max RSS, and the RSS growth
between the first 10% and the end (memory must stay bounded).
"""

from __future__ import annotations

import json
import random
import resource
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from raylane.contracts import Codec, ContractError, contract_names


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _value(rng: random.Random, schema: Any, depth: int = 0) -> Any:
    """A valid value of `schema` (the fastavro-parsed field types of our contracts)."""
    if isinstance(schema, list):
        return _value(rng, rng.choice(schema), depth)
    if isinstance(schema, dict):
        t = schema["type"]
        if t == "map":
            return {
                f"k{i}": _value(rng, schema["values"], depth + 1) for i in range(rng.randint(0, 4))
            }
        if t == "array":
            return [_value(rng, schema["items"], depth + 1) for _ in range(rng.randint(0, 4))]
        if t == "enum":
            return rng.choice(schema["symbols"])
        if t == "record":  # nested records (e.g. model.drift's drifted columns)
            return {f["name"]: _value(rng, f["type"], depth + 1) for f in schema["fields"]}
        return _value(rng, t, depth)
    return {
        "null": lambda: None,
        "string": lambda: "".join(chr(rng.randint(32, 0x2FF)) for _ in range(rng.randint(0, 20))),
        "double": lambda: rng.uniform(-1e6, 1e6),
        "float": lambda: rng.uniform(-1e3, 1e3),
        "long": lambda: rng.randint(-(2**63), 2**63 - 1),
        "int": lambda: rng.randint(-(2**31), 2**31 - 1),
        "boolean": lambda: rng.random() < 0.5,
        "bytes": lambda: rng.randbytes(rng.randint(0, 8)),
    }[schema]()


def _record(rng: random.Random, codec: Codec) -> dict[str, Any]:
    return {f["name"]: _value(rng, f["type"]) for f in codec.schema["fields"]}


_JUNK: list[Any] = [
    None,
    True,
    0,
    -1,
    2**64,
    1.5,
    float("nan"),
    "",
    "x" * 50,
    [],
    {},
    [1, "a"],
    {"a": {"b": None}},
    b"\xff",
]


def _mangle(rng: random.Random, rec: dict[str, Any]) -> dict[str, Any]:
    out = dict(rec)
    for _ in range(rng.randint(1, 4)):
        name = rng.choice([*out, "extra"])
        if rng.random() < 0.3:
            out.pop(name, None)
        else:
            out[name] = rng.choice(_JUNK)
    return out


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(5)
        pos = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[pos] = rng.randrange(256)
        elif op == 2:
            b.insert(pos, rng.randrange(256))
        elif op == 3 and b:
            del b[pos]
        else:
            b = b[: rng.randint(0, len(b))]
    return bytes(b)


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    rng = random.Random(seed)
    codecs = [Codec.for_contract(c, formats=("avro", "json")) for c in contract_names()]
    codecs.append(Codec.for_contract("payments.initiated", version=1, formats=("avro", "json")))
    ids = [*sorted({c.schema_id for c in codecs}), 0, 999, 4294967295]

    def pick() -> Codec:
        return rng.choice(codecs)

    gens: dict[str, Callable[[Codec], tuple[str, Any]]] = {
        "random bytes": lambda c: ("decode", rng.randbytes(rng.randint(0, 300))),
        "header + random body": lambda c: (
            "decode",
            b"\x00" + rng.choice(ids).to_bytes(4, "big") + rng.randbytes(rng.randint(0, 300)),
        ),
        "mutated avro": lambda c: ("decode", _mutate(rng, c.encode(_record(rng, c)))),
        "mutated json": lambda c: (
            "decode",
            _mutate(rng, json.dumps(_record(rng, c), default=str).encode()),
        ),
        "mangled dict as json": lambda c: (
            "decode",
            json.dumps(_mangle(rng, _record(rng, c)), default=str).encode(),
        ),
        "huge length": lambda c: (
            "decode",
            b"\x00"
            + c.schema_id.to_bytes(4, "big")
            + _varint(rng.randint(1 << 20, 1 << 62))
            + rng.randbytes(16),
        ),
        "mangled dict to encode": lambda c: ("encode", _mangle(rng, _record(rng, c))),
        "valid record": lambda c: ("roundtrip", _record(rng, c)),
    }
    names = list(gens)
    outcomes: Counter[str] = Counter()
    by_gen: Counter[tuple[str, str]] = Counter()
    crashes: list[str] = []
    rss_early = 0.0
    t0 = time.perf_counter()
    console = Console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("fuzzing", total=n)
        for i in range(n):
            codec = pick()
            gen = names[i % len(names)]
            op, data = gens[gen](codec)
            try:
                if op == "decode":
                    codec.decode(data)
                elif op == "encode":
                    codec.decode(codec.encode(data))
                else:
                    assert codec.decode(codec.encode(data)) is not None
                outcome = "ok"
            except ContractError as e:
                outcome = e.error_class
            except Exception as e:
                outcome = f"CRASH {type(e).__name__}"
                if len(crashes) < 5:
                    crashes.append(f"{gen}: {data!r:.200}\n{traceback.format_exc()}")
            outcomes[outcome] += 1
            by_gen[(gen, "ok" if outcome == "ok" else "error")] += 1
            if i == n // 10:
                rss_early = _rss_mib()
            if i % 1000 == 0:
                progress.update(task, completed=i)
    elapsed = time.perf_counter() - t0

    table = Table(
        title=f"{n:,} inputs, seed {seed}, {elapsed:.1f} s ({n / elapsed:,.0f}/s)",
        title_justify="left",
    )
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for outcome, k in outcomes.most_common():
        table.add_row(outcome, f"{k:,}")
    console.print(table)
    gtable = Table(title="by generator", title_justify="left")
    for col in ("generator", "ok", "typed error"):
        gtable.add_column(col, justify="right" if col != "generator" else "left")
    for g in names:
        gtable.add_row(g, f"{by_gen[(g, 'ok')]:,}", f"{by_gen[(g, 'error')]:,}")
    console.print(gtable)
    crashed = sum(k for o, k in outcomes.items() if o.startswith("CRASH"))
    rss = _rss_mib()
    console.print(
        f"max RSS {rss:.0f} MiB (after 10% of inputs: {rss_early:.0f} MiB, "
        f"growth {rss - rss_early:+.0f} MiB); untyped exceptions: {crashed}"
    )
    for c in crashes:
        console.print(c, highlight=False)
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
