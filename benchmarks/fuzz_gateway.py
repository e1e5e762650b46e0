"""The gateway fuzzed from its own /openapi.json, longer than the test suite does (tests/unit/gateway/
test_fuzz.py): every route, with a valid key, a wrong key and none, a seeded number of cases each.

Cases are schemathesis's, both what the description allows and what it does not (wrong types, missing
fields, stray headers and query strings). The gateway runs in this process (tests/harness.py's
GatewayThread) in front of airlock's fake engine on 127.0.0.1. With a valid key, a body's ``model`` is
set to the served one so that cases reach the engine, not only the router's 404. A finding is a 5xx
answer or a body showing a traceback or a path of this machine; each is printed with its curl command.

    python benchmarks/fuzz_gateway.py [--cases 300] [--seed 13] [--out benchmarks/results/fuzz_gateway.json]

Prints the cases per route and key state with the count of each status, and writes them as JSON.
Exit status 1 if anything was found. The same seed gives the same cases.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

#: what a body must never show: a traceback, a source file, a path of this machine (as the test's)
LEAKS = re.compile(r"Traceback|File \"|\.py\b|/usr/|/home/|/tmp/|/work/|site-packages|internal error")
KEY_STATES = ("valid-key", "wrong-key", "no-key")


def fuzz(
    op: Any, state: str, bearer: str | None, valid: str, url: str, cases: int, seed: int, findings: list[Any]
) -> Counter[int]:
    """Up to ``cases`` cases of one route with one key state; the count of each status."""
    import hypothesis

    statuses: Counter[int] = Counter()

    def one(case: Any) -> None:
        if bearer == valid and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = "tiny"
        if (
            bearer == valid
            and case.path_parameters
            and "model" in case.path_parameters
            and sum(statuses.values()) % 2
        ):
            case.path_parameters["model"] = "tiny"  # every other case: the served model, not a 404
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        response = case.call(base_url=url, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        if response.status_code >= 500 or LEAKS.search(response.text):
            findings.append(
                {
                    "route": op.label,
                    "key": state,
                    "status": response.status_code,
                    "body": response.text[:500],
                    "curl": case.as_curl_command(),
                }
            )

    settings = hypothesis.settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate],  # every case is counted; nothing is shrunk
    )
    hypothesis.seed(seed)(settings(hypothesis.given(case=op.as_strategy())(one)))()
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300, help="cases per route and key state (at most)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_gateway.json")
    args = parser.parse_args()

    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok

    from airlock.gateway.apikeys import INFERENCE_SCOPES, KeyStore
    from airlock.gateway.auth import KeyCache
    from airlock.gateway.openapi import openapi_document
    from airlock.spec import GatewaySpec
    from harness import GatewayThread, fake_engine_config

    work = Path(tempfile.mkdtemp(prefix="airlock-fuzz-"))
    spec = GatewaySpec(max_body_bytes=64 * 1024, max_tokens_limit=64, max_n=2, audit_log=work / "audit.jsonl")
    schema = schemathesis.openapi.from_dict(openapi_document(spec))
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    store = KeyStore(work / "keys.db")
    # every scope a key may hold besides admin: the valid key reaches /metrics too
    token = store.create("fuzzer", scopes=[*INFERENCE_SCOPES, "metrics"])[1]
    tokens = {"valid-key": token, "wrong-key": "sk-airlock-" + "0" * 40, "no-key": None}

    rows: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    started = time.monotonic()
    with GatewayThread([fake_engine_config("tiny")], work, gateway=spec, keys=KeyCache(store)) as gw:
        for op in operations:
            for state in KEY_STATES:
                statuses = fuzz(op, state, tokens[state], token, gw.url, args.cases, args.seed, findings)
                rows.append(
                    {
                        "route": op.label,
                        "key": state,
                        "cases": sum(statuses.values()),
                        "statuses": {str(k): v for k, v in sorted(statuses.items())},
                    }
                )
                line = " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))
                print(f"{op.label:28} {state:9} {sum(statuses.values()):5} cases  {line}", flush=True)

    total = sum(r["cases"] for r in rows)
    by_status: Counter[str] = Counter()
    for r in rows:
        by_status.update(r["statuses"])
    elapsed = time.monotonic() - started
    print(
        f"\n{total} cases in {elapsed:.0f} s, seed {args.seed}; statuses: {dict(sorted(by_status.items()))}"
    )
    print(f"5xx answers: {sum(f['status'] >= 500 for f in findings)}; bodies with a leak: "
          f"{sum(f['status'] < 500 for f in findings)}")  # fmt: skip
    for f in findings[:20]:
        print(f"\n{f['route']} ({f['key']}): {f['status']} {f['body'][:200]}\n  {f['curl']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"seed": args.seed, "cases_per_route": args.cases, "seconds": round(elapsed, 1), "total": total}
    result |= {"statuses": dict(sorted(by_status.items())), "routes": rows, "findings": findings}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
