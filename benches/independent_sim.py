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
- a limiter of one of three shapes may stand in front (the shapes gateways put there,
  coded from their vendors' documentation, not from `batchgen sim`; see `Limiter`):
  `window` (Azure API Management's `rate-limit`: at most N accepted submits in any
  W seconds, sliding), `bucket` (a token bucket: Envoy, AWS API Gateway) and `leaky`
  (nginx's `limit_req ... nodelay`). A refusal is answered 429 (or 503) with the flat
  error shape `{"error": M, "code": C}` or nginx's HTML page, with or without
  `Retry-After`; past `--quota N` accepted submits every submit is answered 403 as
  API Management's `quota` policy answers;
- images are PNGs of random pixels, different for every request, about 32 KB,
  served from `/results/{request_id}/0.png`.

Python's standard library only (no pip install). Flags mirror `batchgen sim`:

    independent_sim.py --port 8787 --min-latency-ms 3000 --max-latency-ms 3000 \
        [--rate-limit N [--limit-shape window|bucket|leaky] [--limit-window-secs S]
         [--limit-burst B] [--limit-status 429|503] [--limit-retry-after on|off]
         [--limit-body json|html] [--retry-after-secs SECS]] [--quota N] [--seed 7]

`--rate-limit N` is calls per window (`window`) or per second (`bucket`, `leaky`).
Retry-After (on by default for `window` and `bucket`, off for `leaky`) names the
seconds until a submit would be accepted, rounded up, at least 1; `--retry-after-secs`
pins it to a fixed number instead (as the first version of this script did). A JSON
refusal's message says "Retry after N seconds." only when Retry-After is sent.

    independent_sim.py --self-test     # checks each shape's accept/refuse rule

`GET /admin/ledger` answers what the benchmark reads: submit and status calls, the
latency of each accepted request in submit order and by request id, completed
requests (images fetched), and rejections by code (limiter refusals under
`RATE_LIMIT_EXCEEDED`, 429 or 503 alike, and `QUOTA_EXCEEDED`).
"""
import argparse
import heapq
import json
import math
import random
import struct
import sys
import threading
import time
import unittest
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


# nginx's own error pages (ngx_http_special_response.c), as `limit_req` sends them.
NGINX_PAGES = {
    429: "429 Too Many Requests",
    503: "503 Service Temporarily Unavailable",
}


def nginx_page(status):
    title = NGINX_PAGES[status]
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n").encode()


class Limiter:
    """Decides, for a submit arriving at `now` (seconds, monotonic), whether it is
    accepted; `admit(now)` answers (True, None) or (False, seconds until a submit
    would be accepted). Pure: it reads no clock, so `--self-test` can drive it.

    - `window` (Azure API Management `rate-limit`, calls per renewal-period): at most
      N accepted submits in any `window` seconds. The wait is until the oldest
      accepted submit in the window is `window` seconds old.
    - `bucket`: N tokens a second into a bucket of `burst` tokens that starts full;
      a submit takes a whole token or is refused. The wait is until the bucket holds
      one token.
    - `leaky` (nginx `limit_req rate=Nr/s burst=B nodelay`, ngx_http_limit_req_module):
      the first submit is accepted with excess 0; each later one computes
      e = max(excess - N * (now - last accepted) + 1, 0) and is refused if e > burst
      (nothing changes), else accepted with excess = e, last accepted = now. nginx
      counts in whole milliseconds; so does this. The wait is until e would be burst.
    """

    def __init__(self, shape, rate, window=1.0, burst=1):
        if shape not in ("window", "bucket", "leaky"):
            raise ValueError(f"unknown limiter shape {shape!r}")
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.shape, self.rate, self.window, self.burst = shape, rate, window, burst
        self.accepted = deque()  # window: accept times within the window
        self.tokens = float(burst)  # bucket
        self.excess = None  # leaky: None until the first submit
        self.last = None  # bucket: last refill; leaky: last accepted, in ms

    def admit(self, now):
        if self.shape == "window":
            while self.accepted and now - self.accepted[0] >= self.window:
                self.accepted.popleft()
            if len(self.accepted) >= self.rate:
                return False, self.window - (now - self.accepted[0])
            self.accepted.append(now)
            return True, None
        if self.shape == "bucket":
            if self.last is not None:
                self.tokens = min(float(self.burst),
                                  self.tokens + self.rate * max(now - self.last, 0.0))
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True, None
            return False, (1.0 - self.tokens) / self.rate
        ms = int(now * 1000.0)
        if self.excess is None:
            self.excess, self.last = 0.0, ms
            return True, None
        elapsed = max(ms - self.last, 0) / 1000.0
        e = max(self.excess - self.rate * elapsed + 1.0, 0.0)
        if e > self.burst:
            return False, (e - self.burst) / self.rate
        self.excess, self.last = e, ms
        return True, None


def retry_after_header(wait):
    """Whole seconds to name in Retry-After: rounded up, at least 1."""
    return max(1, math.ceil(wait - 1e-9))


class Gateway:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.requests = {}  # request_id -> (number, accepted at, latency s)
        self.limiter = (Limiter(args.limit_shape, args.rate_limit, args.limit_window_secs,
                                args.limit_burst) if args.rate_limit else None)
        self.ledger = {"submit_calls": 0, "accepted": 0, "status_calls": 0, "completed": 0,
                       "latencies_ms": [], "latency_ms_by_request": {}, "rejected": {},
                       "max_running": 0}
        self.running = []  # heap of when each accepted request still running finishes
        self.fetched = set()

    def reject(self, code):
        self.ledger["rejected"][code] = self.ledger["rejected"].get(code, 0) + 1

    def refusal(self, now):
        """The answer (status, body, headers) refusing a submit at `now`, or None if
        the quota and the limiter accept it. Called under the lock."""
        a = self.args
        if a.quota is not None and self.ledger["accepted"] >= a.quota:
            self.reject("QUOTA_EXCEEDED")
            return 403, {"statusCode": 403, "message": "Out of call volume quota. "
                         "Quota will be replenished in 23:59:59."}, {}
        if self.limiter is None:
            return None
        ok, wait = self.limiter.admit(now)
        if ok:
            return None
        self.reject("RATE_LIMIT_EXCEEDED")
        on = a.limit_retry_after
        if on is None:
            on = "off" if a.limit_shape == "leaky" else "on"
        secs = a.retry_after_secs if a.retry_after_secs is not None else retry_after_header(wait)
        headers = {"Retry-After": str(secs)} if on == "on" else {}
        status = a.limit_status
        if a.limit_body == "html":
            return status, nginx_page(status), dict(headers, **{"Content-Type": "text/html"})
        message = "Rate limit exceeded."
        if on == "on":
            message += f" Retry after {secs} seconds."
        return status, {"error": message, "code": "RATE_LIMIT_EXCEEDED"}, headers

    def submit(self, kind):
        """(status, body, headers) for a submit."""
        now = time.monotonic()
        with self.lock:
            self.ledger["submit_calls"] += 1
            refused = self.refusal(now)
            if refused is not None:
                return refused
            self.ledger["accepted"] += 1
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
            headers = dict(headers or {})
            self.send_response(code)
            self.send_header("Content-Type", headers.pop("Content-Type", ctype))
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
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


class SelfTest(unittest.TestCase):
    """Each shape's accept/refuse rule, on explicit times (`--self-test`)."""

    def pattern(self, lim, times):
        return [lim.admit(t)[0] for t in times]

    def test_window_admits_n_in_any_window_and_waits_for_the_oldest(self):
        lim = Limiter("window", 3, window=60.0)
        self.assertEqual(self.pattern(lim, [0, 10, 20, 30]), [True, True, True, False])
        self.assertEqual(lim.admit(59.5), (False, 0.5))
        self.assertEqual(retry_after_header(0.5), 1)
        ok, wait = lim.admit(45.0)
        self.assertEqual((ok, retry_after_header(wait)), (False, 15))
        # The oldest slides out at 60 exactly; the next two stay until 70 and 80.
        self.assertEqual(self.pattern(lim, [60.0, 60.0, 70.0]), [True, False, True])
        # Refused calls are not counted: only accepted ones fill the window.
        self.assertEqual(self.pattern(lim, [80.0, 80.0]), [True, False])

    def test_window_of_one_second_takes_n_at_once_each_second(self):
        lim = Limiter("window", 10, window=1.0)
        got = self.pattern(lim, [0.0] * 12 + [0.999] + [1.0] * 11)
        self.assertEqual(got, [True] * 10 + [False] * 3 + [True] * 10 + [False])

    def test_bucket_starts_full_and_refills_at_the_rate(self):
        lim = Limiter("bucket", 10, burst=5)
        self.assertEqual(self.pattern(lim, [0.0] * 6), [True] * 5 + [False])
        ok, wait = lim.admit(0.05)  # half a token
        self.assertFalse(ok)
        self.assertAlmostEqual(wait, 0.05)
        self.assertEqual(retry_after_header(wait), 1)
        self.assertEqual(self.pattern(lim, [0.1, 0.1, 0.2]), [True, False, True])
        # Idle for a minute: the bucket holds no more than its burst.
        self.assertEqual(self.pattern(lim, [60.0] * 6), [True] * 5 + [False])

    def test_bucket_of_one_token_paces_evenly(self):
        lim = Limiter("bucket", 2)
        self.assertEqual(self.pattern(lim, [0.0, 0.0, 0.25, 0.5, 0.5, 1.0]),
                         [True, False, False, True, False, True])

    def test_leaky_is_nginx_limit_req_nodelay(self):
        lim = Limiter("leaky", 10, burst=5)
        # The first request, then five more (excess 1..5), then refused (e = 6).
        self.assertEqual(self.pattern(lim, [0.0] * 7), [True] * 6 + [False])
        self.assertEqual(lim.excess, 5.0)
        # 50 ms later e = 5 - 0.5 + 1 = 5.5 > 5: refused, excess unchanged.
        self.assertFalse(lim.admit(0.05)[0])
        self.assertEqual(lim.excess, 5.0)
        # 100 ms after the last accepted: e = 5 - 1 + 1 = 5: accepted.
        self.assertEqual(self.pattern(lim, [0.1, 0.1, 0.2]), [True, False, True])
        # Elapsed time is counted from the last *accepted* request only.
        self.assertEqual(self.pattern(lim, [0.25, 0.29, 0.3]), [False, False, True])
        # Idle: excess drains to 0, so burst + 1 pass at once again.
        self.assertEqual(self.pattern(lim, [10.0] * 7), [True] * 6 + [False])

    def test_leaky_without_burst_takes_one_per_interval(self):
        lim = Limiter("leaky", 10, burst=0)
        self.assertEqual(self.pattern(lim, [0.0, 0.0, 0.05, 0.1, 0.15, 0.2]),
                         [True, False, False, True, False, True])

    def gateway(self, *flags):
        return Gateway(parse_args(["--rate-limit", "1", *flags]))

    def test_refusals_are_answered_and_counted_as_the_flags_say(self):
        gw = self.gateway("--limit-shape", "leaky", "--limit-burst", "0",
                          "--limit-status", "503", "--limit-body", "html")
        self.assertIsNone(gw.refusal(0.0))
        status, body, headers = gw.refusal(0.0)
        self.assertEqual(status, 503)
        self.assertIn(b"<title>503 Service Temporarily Unavailable</title>", body)
        self.assertEqual(headers, {"Content-Type": "text/html"})  # no Retry-After
        gw = self.gateway("--limit-shape", "window", "--limit-window-secs", "60")
        self.assertIsNone(gw.refusal(0.0))
        status, body, headers = gw.refusal(20.0)
        self.assertEqual((status, headers), (429, {"Retry-After": "40"}))
        self.assertEqual(body["code"], "RATE_LIMIT_EXCEEDED")
        self.assertIn("Retry after 40 seconds.", body["error"])
        gw = self.gateway("--limit-shape", "bucket", "--limit-retry-after", "off")
        self.assertIsNone(gw.refusal(0.0))
        status, body, headers = gw.refusal(0.0)
        self.assertEqual((status, headers, body["error"]), (429, {}, "Rate limit exceeded."))
        self.assertEqual(gw.ledger["rejected"], {"RATE_LIMIT_EXCEEDED": 1})

    def test_quota_answers_403_after_n_accepted(self):
        gw = Gateway(parse_args(["--quota", "2"]))
        self.assertEqual([gw.submit("glm-image")[0] for _ in range(4)], [200, 200, 403, 403])
        self.assertEqual(gw.ledger["rejected"], {"QUOTA_EXCEEDED": 2})
        self.assertEqual(gw.ledger["accepted"], 2)
        _, body, _ = gw.refusal(0.0)
        self.assertEqual(body["statusCode"], 403)
        self.assertIn("Out of call volume quota", body["message"])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--min-latency-ms", type=float, default=5000)
    p.add_argument("--max-latency-ms", type=float, default=15000)
    p.add_argument("--rate-limit", type=int, default=0,
                   help="accepted submits per window (window) or per second (bucket, leaky)")
    p.add_argument("--limit-shape", choices=["window", "bucket", "leaky"], default="window")
    p.add_argument("--limit-window-secs", type=float, default=1.0)
    p.add_argument("--limit-burst", type=int, default=1)
    p.add_argument("--limit-status", type=int, choices=[429, 503], default=429)
    p.add_argument("--limit-retry-after", choices=["on", "off"], default=None,
                   help="default: on for window and bucket, off for leaky")
    p.add_argument("--limit-body", choices=["json", "html"], default="json")
    p.add_argument("--retry-after-secs", type=int, default=None,
                   help="a fixed Retry-After instead of the computed wait")
    p.add_argument("--quota", type=int, default=None,
                   help="accepted submits in all; past it every submit is answered 403")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--self-test", action="store_true",
                   help="check each limiter shape's rule and exit")
    args = p.parse_args(argv)
    if args.max_latency_ms < args.min_latency_ms:
        p.error("--max-latency-ms is below --min-latency-ms")
    if args.limit_window_secs <= 0:
        p.error("--limit-window-secs must be positive")
    if args.limit_burst < 0:
        p.error("--limit-burst must not be negative")
    if args.rate_limit < 0:
        p.error("--rate-limit must not be negative")
    return args


def main():
    args = parse_args(sys.argv[1:])
    if args.self_test:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(SelfTest)
        result = unittest.TextTestRunner(verbosity=2).run(suite)
        sys.exit(0 if result.wasSuccessful() else 1)
    ThreadingHTTPServer.request_queue_size = 1024
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(Gateway(args)))
    server.serve_forever()


if __name__ == "__main__":
    main()
