"""Cold start and warm cost of a function binary, run the way Lambda runs it.

A minimal Lambda Runtime API on 127.0.0.1 spawns the binary with AWS_LAMBDA_RUNTIME_API
pointing at it, times spawn → first `GET /next` (init), then serves N invocations of a signed
API Gateway event and reports the warm round trip (p50, including this script's own HTTP
handling) and the peak RSS (VmHWM from /proc). The event type is one the webhook acknowledges
without enqueueing, so no network is needed.

    cargo build --release -p webhook
    python3 tests/perf/coldstart.py target/release/webhook 200
"""
import hashlib, hmac, json, os, statistics, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

binary, n = sys.argv[1], int(sys.argv[2])
secret = "whsec_bench"
body = json.dumps({"id": "evt_bench", "object": "event", "type": "charge.succeeded", "created": int(time.time()),
                   "livemode": False, "data": {"object": {"id": "ch_1", "object": "charge", "customer": "cus_1", "pad": "x" * 3000}}})
t = int(time.time())
sig = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
event = json.dumps({"version": "2.0", "routeKey": "POST /webhooks/stripe", "rawPath": "/webhooks/stripe", "rawQueryString": "",
    "headers": {"stripe-signature": f"t={t},v1={sig}"}, "requestContext": {"accountId": "1", "apiId": "a", "domainName": "d",
    "domainPrefix": "d", "http": {"method": "POST", "path": "/webhooks/stripe", "protocol": "HTTP/1.1", "sourceIp": "1.1.1.1",
    "userAgent": "Stripe"}, "requestId": "r", "routeKey": "POST /webhooks/stripe", "stage": "$default", "time": "x", "timeEpoch": 0},
    "body": body, "isBase64Encoded": False}).encode()
state = {"first_next": None, "sent": {}, "done": {}, "count": 0}
lock = threading.Lock(); finished = threading.Event()

class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        now = time.perf_counter()
        with lock:
            if state["first_next"] is None: state["first_next"] = now
            if state["count"] >= n:
                finished.set(); time.sleep(3600); return
            state["count"] += 1; rid = f"req-{state['count']}"; state["sent"][rid] = now
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:1:function:webhook")
        self.send_header("Content-Length", str(len(event))); self.end_headers(); self.wfile.write(event)
    def do_POST(self):
        rid = self.path.split("/")[4]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock: state["done"][rid] = time.perf_counter()
        self.send_response(202); self.send_header("Content-Length", "0"); self.end_headers()

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{srv.server_address[1]}", AWS_REGION="us-east-1",
           AWS_LAMBDA_FUNCTION_NAME="webhook", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_LAMBDA_FUNCTION_VERSION="1",
           STRIPE_WEBHOOK_SECRET=secret, EVENTS_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/1/e.fifo",
           PAYMENT_FAILED_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/1/p.fifo", AWS_EC2_METADATA_DISABLED="true", RUST_LOG="off")
start = time.perf_counter()
proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
peak = 0
while not finished.wait(0.005):
    try:
        rss = int([l for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmHWM")][0].split()[1])
        peak = max(peak, rss)
    except Exception: pass
proc.kill()
lat = sorted((state["done"][r] - state["sent"][r]) * 1000 for r in state["done"])
print(f"{os.path.basename(binary)}: init {(state['first_next'] - start) * 1000:.1f} ms, first invocation {lat[0] if lat else -1:.2f} ms, "
      f"warm p50 {statistics.median(lat[1:]):.3f} ms, peak RSS {peak / 1024:.1f} MiB, size {os.path.getsize(binary) / 1048576:.1f} MiB")
