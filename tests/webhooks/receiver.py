"""A webhook receiver as docs/webhooks.md describes one: verifies the Standard Webhooks signature,
deduplicates nothing (the test wants to see every delivery), and records each one as a JSON line.

    receiver.py PORT SECRET OUT FAIL_RATE [CERT KEY]

FAIL_RATE: the share of requests answered 500 at random (before anything is recorded). With CERT
and KEY (PEM files) it serves HTTPS. REPLY_BYTES in the environment: the size of the body of a
successful answer (default none, 204).
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import random
import ssl
import sys
import threading
import time

port, secret, out, fail_rate = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
lock = threading.Lock()
key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()


def verify(headers, body):
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig.split(",", 1)[1], expected)
        for sig in headers["webhook-signature"].split(" ")
        if sig.startswith("v1,")
    )


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if random.random() < fail_rate:
            return self.answer(500)
        event = json.loads(body)
        record = {
            "id": self.headers["webhook-id"],
            "valid": verify(self.headers, body),
            "content_type": self.headers["Content-Type"],
            "ce_id": event["id"],
            "type": event["type"],
            "seq": event["data"]["seq"],
            "path": event["data"]["path"],
            "sha256": event["data"].get("sha256"),
            "received_ms": int(time.time() * 1000),
        }
        with lock, open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        size = int(os.environ.get("REPLY_BYTES", "0"))
        if size == 0:
            return self.answer(204)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(b"x" * size)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
if len(sys.argv) > 6:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[5], sys.argv[6])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
