#!/usr/bin/env python3
"""An independent simulator of the GLM Image gateway, for `cargo bench --bench run_speed`.

Why this exists: batchgen's own simulator (`batchgen sim`) was written by the same
hands as the client, so a client tuned against it could be tuned to its quirks. This
one is written from the vendor's documentation alone (../shared/api/glm-image-api.txt)
and shares no code or choices with `batchgen sim` where the documentation leaves room:

- a submit answers `{"request_id", "status": "QUEUED"}`; status goes QUEUED, then
  PROCESSING, then COMPLETED once the request's latency has passed since it was
  accepted;
- a finished request answers in the workflow's shape (`status: COMPLETED`,
  `output.media_url[0]`) for even request numbers and in the sample's shape
  (`{"images": [{"url": ...}]}`, no status) for odd ones;
- the rate limit is a sliding window: at most N accepted submits in any 1 s, past
  it 429 with `Retry-After` and the flat error shape `{"error": M, "code": C}`;
- images are PNGs of random pixels, different for every request, about 32 KB,
  served from `/results/{request_id}/0.png`.

Python's standard library only (no pip install). Flags mirror `batchgen sim`:

    independent_sim.py --port 8787 --min-latency-ms 3000 --max-latency-ms 3000 \
        [--rate-limit 10 --retry-after-secs 1] [--seed 7]

`GET /admin/ledger` answers what the benchmark reads: submit and status calls, the
latency of each accepted request in submit order and by request id, completed
requests (images fetched), and rejections by code.
"""
import argparse
import heapq
import json
import random
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

T2I_SUBMIT = "/glm-image/v1/glm-image-request"
T2I_STATUS = "/v2/requests/status/"
I2I_SUBMIT = "/glm-image-image-to-image/v1/glm-image-image-to-image-request"
I2I_STATUS = "/glm-image-image-to-image/v1/glm-image-image-to-image-request-result"
SIDE = 104  # pixels: random RGB at this size compresses to about 32 KB


def png(seed):
    """A PNG of random pixels, different for every seed."""
    rng = random.Random(seed)
    row = 1 + SIDE * 3
    raw = bytearray(rng.randbytes(row * SIDE))
    for y in range(SIDE):
        raw[y * row] = 0  # filter type: none

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 1)) + chunk(b"IEND", b""))


class Gateway:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.requests = {}  # request_id -> (number, accepted at, latency s)
        self.accepted = deque()  # accept times within the last second
        self.ledger = {"submit_calls": 0, "status_calls": 0, "completed": 0,
                       "latencies_ms": [], "latency_ms_by_request": {}, "rejected": {},
                       "max_running": 0}
        self.running = []  # heap of when each accepted request still running finishes
        self.fetched = set()

    def reject(self, code):
        self.ledger["rejected"][code] = self.ledger["rejected"].get(code, 0) + 1

    def submit(self, kind):
        """(status, body, headers) for a submit."""
        now = time.monotonic()
        with self.lock:
            self.ledger["submit_calls"] += 1
            limit = self.args.rate_limit
            while self.accepted and now - self.accepted[0] >= 1.0:
                self.accepted.popleft()
            if limit and len(self.accepted) >= limit:
                self.reject("RATE_LIMIT_EXCEEDED")
                secs = self.args.retry_after_secs
                return 429, {"error": f"Rate limit exceeded. Retry after {secs} seconds.",
                             "code": "RATE_LIMIT_EXCEEDED"}, {"Retry-After": str(secs)}
            self.accepted.append(now)
            lo, hi = self.args.min_latency_ms, self.args.max_latency_ms
            latency = self.rng.uniform(lo, hi) / 1000.0
            number = len(self.requests)
            rid = f"{kind}_{uuid.UUID(int=self.rng.getrandbits(128))}"
            self.requests[rid] = (number, now, latency)
            while self.running and self.running[0] <= now:
                heapq.heappop(self.running)
            heapq.heappush(self.running, now + latency)
            self.ledger["max_running"] = max(self.ledger["max_running"], len(self.running))
            self.ledger["latencies_ms"].append(round(latency * 1000.0, 3))
            self.ledger["latency_ms_by_request"][rid] = round(latency * 1000.0, 3)
        return 200, {"request_id": rid, "status": "QUEUED"}, {}

    def status(self, rid, host):
        with self.lock:
            self.ledger["status_calls"] += 1
            found = self.requests.get(rid)
            if found is None:
                self.reject("NOT_FOUND")
        if found is None:
            return 404, {"error": "Request not found", "code": "NOT_FOUND"}, {}
        number, accepted, latency = found
        elapsed = time.monotonic() - accepted
        if elapsed < latency:
            state = "QUEUED" if elapsed < 0.1 * latency else "PROCESSING"
            return 200, {"request_id": rid, "status": state}, {}
        url = f"http://{host}/results/{rid}/0.png"
        if number % 2 == 0:
            return 200, {"request_id": rid, "status": "COMPLETED",
                         "output": {"media_url": [url]}}, {}
        return 200, {"images": [{"file_name": "nano-banana-pro-edit-output.png",
                                 "content_type": "image/png", "url": url}],
                     "description": ""}, {}

    def image(self, rid):
        """The request's PNG, or None if there is no such request or it is not done."""
        now = time.monotonic()
        with self.lock:
            found = self.requests.get(rid)
            if found is None or now - found[1] < found[2]:
                return None
            if rid not in self.fetched:
                self.fetched.add(rid)
                self.ledger["completed"] += 1
        return png(found[0] ^ self.args.seed << 32)


def handler(gw):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle's
        # algorithm holds the body for the client's delayed ACK (40 ms).
        disable_nagle_algorithm = True

        def log_message(self, *_):
            pass

        def answer(self, code, body, headers=None, ctype="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            if not self.headers.get("Ocp-Apim-Subscription-Key"):
                return self.answer(401, {"error": {
                    "code": "UNAUTHORIZED",
                    "message": "Missing or invalid Ocp-Apim-Subscription-Key header"}})
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                return self.answer(400, {"error": {"code": "VALIDATION_ERROR",
                                                   "message": "Body is not a JSON object"}})
            path = self.path.split("?", 1)[0]
            if path in (T2I_SUBMIT, I2I_SUBMIT):
                if not isinstance(doc.get("prompt"), str) or not doc["prompt"]:
                    return self.answer(400, {"error": {"code": "INVALID_PARAMETER",
                                                       "message": "prompt is required"}})
                kind = "glm-image" if path == T2I_SUBMIT else "glm-image-image-to-image"
                return self.answer(*gw.submit(kind))
            if path.startswith(T2I_STATUS) or path == I2I_STATUS:
                rid = path[len(T2I_STATUS):] if path.startswith(T2I_STATUS) else ""
                rid = rid or str(doc.get("request_id", ""))
                return self.answer(*gw.status(rid, self.headers.get("Host", "")))
            self.answer(404, {"error": {"code": "NOT_FOUND", "message": "No such path"}})

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/admin/ledger":
                with gw.lock:
                    return self.answer(200, gw.ledger)
            parts = path.strip("/").split("/")
            if len(parts) == 3 and parts[0] == "results":
                data = gw.image(parts[1])
                if data is not None:
                    return self.answer(200, data, ctype="image/png")
            self.answer(404, {"error": {"code": "NOT_FOUND", "message": "No such file"}})

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--min-latency-ms", type=float, default=5000)
    p.add_argument("--max-latency-ms", type=float, default=15000)
    p.add_argument("--rate-limit", type=int, default=0, help="accepted submits per second")
    p.add_argument("--retry-after-secs", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    if args.max_latency_ms < args.min_latency_ms:
        p.error("--max-latency-ms is below --min-latency-ms")
    ThreadingHTTPServer.request_queue_size = 1024
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(Gateway(args)))
    server.serve_forever()


if __name__ == "__main__":
    main()
