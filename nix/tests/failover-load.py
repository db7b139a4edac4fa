"""Writes through the balancer while an application node is stopped (nix/tests/vm-multinode.nix).

    failover-load --host http://lb --users 20 --seconds 60 --password PW --stopped-file F --out OUT

USERS makers (loadtest-maker-0001...) each create a work order (a fresh Idempotency-Key; sent once
more with the same key when the answer was 502/503/504 or none), then list their work orders, in a
loop. At the end every write whose outcome is still unknown is replayed once with its key, and OUT
gets JSON: the acknowledged work order ids and every request's outcome, split by the moment the test
wrote into --stopped-file (seconds since the epoch, when the node was stopped). The caller compares
the ids with the database. Standard library only, like the Debian twin (tests/stack/test_multinode.py).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
import uuid

RETRY_STATUSES = {0, 502, 503, 504}


def call(host: str, method: str, path: str, token: str | None = None, body: dict | None = None,
         key: str | None = None) -> tuple[int, dict | None]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    if key:
        headers["Idempotency-Key"] = key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(host + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--think", type=float, default=0.2)
    parser.add_argument("--password", required=True)
    parser.add_argument("--stopped-file", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    tokens = []
    for n in range(1, args.users + 1):
        status, data = call(args.host, "POST", "/api/auth/login/",
                            body={"username": f"loadtest-maker-{n:04d}", "password": args.password})
        if status != 200:
            raise SystemExit(f"login of maker {n} failed: {status} {data}")
        tokens.append(data["token"])
    _, customers = call(args.host, "GET", "/api/customers/", tokens[0])
    _, products = call(args.host, "GET", "/api/products/", tokens[0])
    order = {"customer": customers["results"][0]["id"], "product": products["results"][0]["id"],
             "production_quantity": 1, "delivery_date": "2031-01-31", "priority": "normal"}

    events: list[tuple[float, str, int]] = []  # (wall clock, what, status)
    acknowledged: list[int] = []
    unknown: list[tuple[str, str]] = []  # (token, key)
    lock = threading.Lock()
    deadline = time.time() + args.seconds

    def user(token: str) -> None:
        while time.time() < deadline:
            key = str(uuid.uuid4())
            status, data = call(args.host, "POST", "/api/workorders/", token, order, key)
            with lock:
                events.append((time.time(), "create", status))
            if status in RETRY_STATUSES:
                time.sleep(0.5)
                status, data = call(args.host, "POST", "/api/workorders/", token, order, key)
            with lock:
                if 200 <= status < 300:
                    acknowledged.append(data["id"])
                elif status in RETRY_STATUSES or status == 409:
                    unknown.append((token, key))
            time.sleep(args.think)
            status, _ = call(args.host, "GET", "/api/workorders/?page_size=20", token)
            with lock:
                events.append((time.time(), "list", status))
            time.sleep(args.think)

    threads = [threading.Thread(target=user, args=(token,), daemon=True) for token in tokens]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(args.seconds + 120)

    still_unknown = 0
    for token, key in unknown:
        status, data = call(args.host, "POST", "/api/workorders/", token, order, key)
        if 200 <= status < 300:
            acknowledged.append(data["id"])
        else:
            still_unknown += 1

    try:
        with open(args.stopped_file) as handle:
            stopped = float(handle.read().strip())
    except (OSError, ValueError):
        stopped = None

    def failed(chosen) -> list[list]:
        return [[round(t, 3), what, status] for t, what, status in chosen if not 200 <= status < 300]

    before = [e for e in events if stopped is None or e[0] < stopped]
    during = [e for e in events if stopped is not None and stopped <= e[0] < stopped + 5]
    after = [e for e in events if stopped is not None and e[0] >= stopped + 5]
    result = {
        "users": args.users, "requests": len(events), "stopped_at": stopped,
        "requests_before_stop": len(before), "requests_after_5s": len(after),
        "failed_before_stop": failed(before), "failed_within_5s_of_stop": failed(during),
        "failed_after_5s": failed(after), "acknowledged": sorted(set(acknowledged)),
        "replayed": len(unknown), "still_unknown": still_unknown,
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle)
    print(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
