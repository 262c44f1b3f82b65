"""Load test of a live studio: N submitters and M readers for T seconds.

Each submitter POSTs toy runs in a loop with an `Idempotency-Key` and, after a time-out or a
connection error, retries the same request with the same key (what a careful client does). Each
reader cycles through the dashboard's reads (run list, a run, its metrics, health). At the end the
stored runs are compared with what the clients were told: every run a client got (201, or 200 on
a retry) must be stored exactly once and nothing may be stored that no client got.

By default it starts a throw-away studio without a worker (the API alone, on the embedded
default, or on PostgreSQL + Redis with --database-url / --broker-url) in a temporary folder;
--url points it at a running one instead.

    python benchmarks/load.py                                  # 100 + 200 for 60 s, embedded default
    python benchmarks/load.py --submitters 20 --readers 40 --seconds 10
    python benchmarks/load.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --broker-url redis://127.0.0.1:6379/0                  # a fresh database is created and dropped
    python benchmarks/load.py --api-workers 2                  # `remix studio --api-workers 2`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
TOKEN = "load-benchmark-token"
RUN_BODY = {"preset": "toy", "algorithm": "remix-grpo", "steps": 5, "seed": 0,
            "overrides": {"warm_start.steps": 0, "rollout.prompts_per_step": 4, "rollout.group_size": 4}}


# ----------------------------------------------------------------------------- a throw-away studio
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_postgres(admin_url: str) -> tuple[str, str]:
    import psycopg

    name = f"remix_load_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rpartition("/")[0] + "/" + name, name


def _drop_postgres(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_studio(data_dir: Path, database_url: str | None, broker_url: str | None,
                 api_workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMIX_")}
    env.update(REMIX_DATA_DIR=str(data_dir), REMIX_API_TOKENS=TOKEN, PYTHONPATH=str(REPO))
    if database_url:
        env["REMIX_DATABASE_URL"] = database_url
    if broker_url:
        env["REMIX_BROKER_URL"] = broker_url
    log = open(data_dir / "api.log", "ab")  # noqa: SIM115 - closed when the process ends
    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "studio", "--no-worker", "--port", str(port),
                             "--api-workers", str(api_workers), "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the studio exited with {proc.returncode}; see {data_dir / 'api.log'}")
        try:
            if httpx.get(url + "/api/v1/health", timeout=2).status_code in (200, 503):
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the studio did not answer within 120 s")


# ----------------------------------------------------------------------------- a lean HTTP client
class Connection:
    """One keep-alive HTTP/1.1 connection, as a browser tab holds one. The load generator shares
    the machine's two cores with the studio it measures: httpx spent about as much CPU per request
    as the API (its CPU per request is printed beside the API's), this client a fraction of it. A
    request that fails or times out drops the connection, as httpx does; the next one reconnects."""

    def __init__(self, url: str, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port, self.prefix = parsed.hostname or "127.0.0.1", parsed.port or 80, parsed.path.rstrip("/")
        self.timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._exchange(method, path, body, headers or {}), self.timeout)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        head = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        if body:
            head.append("Content-Type: application/json")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        if fields.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                data += (await reader.readexactly(size + 2))[:-2]
            await reader.readuntil(b"\r\n")
        else:
            data = await reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            self.close()
        return int(status_line.split(" ", 2)[1]), data

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


# ----------------------------------------------------------------------------- load
class Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {"read": [], "write": []}
        self.outcomes: Counter[str] = Counter()
        self.run_ids: dict[str, int] = {}  # idempotency key -> run id the client was given
        self.created = 0  # 201s
        self.cpu_ms: dict[str, float] = {}  # CPU milliseconds per answered request, by process


def _outcome(kind: str, exc_or_status) -> str:
    return f"{kind} {exc_or_status}" if isinstance(exc_or_status, int) else f"{kind} {type(exc_or_status).__name__}"


# what a request can fail with: refused or reset connections, a cut-off answer, the time-out
_FAILURES = (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


async def submitter(conn: Connection, stop: float, stats: Stats) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = json.dumps({"config": RUN_BODY}).encode()
    while time.monotonic() < stop:
        key = str(uuid.uuid4())
        while True:  # retry the same request (same key) until the API answers
            t0 = time.monotonic()
            try:
                status, data = await conn.request("POST", "/runs", body, {**headers, "Idempotency-Key": key})
            except _FAILURES as exc:
                stats.outcomes[_outcome("write", exc)] += 1
                if time.monotonic() > stop + 60:
                    break
                continue
            stats.latency["write"].append(time.monotonic() - t0)
            stats.outcomes[_outcome("write", status)] += 1
            if status in (200, 201):
                stats.run_ids[key] = json.loads(data)["id"]
                stats.created += status == 201
                break
            if status < 500:
                break
        await asyncio.sleep(random.uniform(0, 0.05))


async def reader(conn: Connection, stop: float, stats: Stats) -> None:
    while time.monotonic() < stop:
        known = list(stats.run_ids.values())
        rid = random.choice(known) if known else None
        path = random.choice(["/runs?limit=20", "/health"] + ([f"/runs/{rid}", f"/runs/{rid}/metrics"] if rid else []))
        t0 = time.monotonic()
        try:
            status, _ = await conn.request("GET", path)
        except _FAILURES as exc:
            stats.outcomes[_outcome("read", exc)] += 1
            continue
        stats.latency["read"].append(time.monotonic() - t0)
        stats.outcomes[_outcome("read", status)] += 1


async def run_load(url: str, submitters: int, readers: int, seconds: float, timeout: float) -> Stats:
    # one connection per simulated user, as a browser tab would have
    stats = Stats()
    conns = [Connection(url + "/api/v1", timeout) for _ in range(submitters + readers)]
    try:
        stop = time.monotonic() + seconds
        await asyncio.gather(*[submitter(c, stop, stats) for c in conns[:submitters]],
                             *[reader(c, stop, stats) for c in conns[submitters:]])
    finally:
        for c in conns:
            c.close()
    return stats


def stored_run_ids(url: str) -> list[int]:
    ids: list[int] = []
    with httpx.Client(base_url=url + "/api/v1", timeout=60) as c:
        while True:
            page = c.get("/runs", params={"limit": 200, "offset": len(ids)}).json()
            ids += [r["id"] for r in page["data"]]
            if len(ids) >= page["count"] or not page["data"]:
                return ids


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summary(stats: Stats, stored: list[int]) -> dict:
    given = list(stats.run_ids.values())
    return {"outcomes": dict(stats.outcomes), "given": len(given), "created": stats.created,
            "stored": len(set(stored)), "stored_twice": len(stored) - len(set(stored)),
            "ghosts": len(set(stored) - set(given)), "missing": len(set(given) - set(stored)),
            "read_p95_s": _pct(stats.latency["read"], .95), "write_p95_s": _pct(stats.latency["write"], .95),
            "cpu_ms_per_request": stats.cpu_ms}


def report(stats: Stats, stored: list[int], seconds: float, label: str) -> bool:
    given = list(stats.run_ids.values())
    duplicates = len(stored) - len(set(stored))
    ghosts = set(stored) - set(given)
    missing = set(given) - set(stored)
    errors = {k: v for k, v in stats.outcomes.items() if not k.endswith((" 200", " 201"))}
    print(f"\n{label}")
    print(f"{'':8} {'requests':>9} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7}")
    for kind in ("write", "read"):
        lat = stats.latency[kind]
        print(f"{kind:8} {len(lat):9d} {len(lat) / seconds:7.1f} {_pct(lat, .5):7.3f} {_pct(lat, .95):7.3f} "
              f"{_pct(lat, .99):7.3f}")
    print(f"runs: {len(given)} given to clients ({stats.created} as 201), {len(set(stored))} stored, "
          f"{duplicates} stored twice, {len(ghosts)} stored without a client, {len(missing)} given but missing")
    if stats.cpu_ms:
        print("CPU per answered request: " + ", ".join(f"{k} {v:.2f} ms" for k, v in stats.cpu_ms.items()))
    print("errors: " + (", ".join(f"{k} x{v}" for k, v in sorted(errors.items())) or "none"))
    return not errors and not duplicates and not ghosts and not missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--submitters", type=int, default=100)
    ap.add_argument("--readers", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=10, help="client time-out per request (then retry)")
    ap.add_argument("--url", help="a running studio (default: start a throw-away one)")
    ap.add_argument("--database-url", help="PostgreSQL admin URL: a fresh database is created there and dropped")
    ap.add_argument("--broker-url")
    ap.add_argument("--api-workers", type=int, default=1, help="`remix studio --api-workers` of the throw-away studio")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    proc, db_name = None, None
    with tempfile.TemporaryDirectory(prefix="remix-load-") as tmp:
        url = args.url
        label = f"studio at {url}" if url else ("PostgreSQL" if args.database_url else "embedded (SQLite)")
        try:
            if url is None:
                database_url = None
                if args.database_url:
                    database_url, db_name = _fresh_postgres(args.database_url)
                proc, url = start_studio(Path(tmp), database_url, args.broker_url, args.api_workers)
            studio = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)] if proc else []
            cpu0 = (time.process_time(), _cpu_seconds(studio))
            started = time.monotonic()
            stats = asyncio.run(run_load(url, args.submitters, args.readers, args.seconds, args.timeout))
            elapsed = time.monotonic() - started
            # CPU per answered request: the generator's and the studio's (none for --url)
            answered = len(stats.latency["read"]) + len(stats.latency["write"])
            stats.cpu_ms = {"load generator": (time.process_time() - cpu0[0]) * 1000 / max(1, answered)}
            if studio:
                stats.cpu_ms["studio"] = (_cpu_seconds(studio) - cpu0[1]) * 1000 / max(1, answered)
            stored = stored_run_ids(url)
            ok = report(stats, stored, elapsed,
                        f"{label}: {args.submitters} submitters + {args.readers} readers for {args.seconds:.0f} s "
                        f"(wall {elapsed:.0f} s), {os.cpu_count()} CPUs")
            if args.json:
                Path(args.json).write_text(json.dumps(summary(stats, stored), indent=2))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            if db_name:
                _drop_postgres(args.database_url, db_name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
