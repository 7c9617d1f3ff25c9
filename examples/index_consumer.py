"""An example consumer of filegate's file events: for every text file uploaded under `in/`, it
fetches the file, checks its SHA-256, indexes it (lines, words, the most frequent words) and writes
the index back as `out/<name>.index.json` — exactly once in effect, across restarts of itself.

It is a webhook receiver ([[webhooks]] in filegate's configuration, docs/webhooks.md):

    [[webhooks]]
    name = "indexer"
    url = "http://127.0.0.1:8099/"
    secret = "…"                      # the same as INDEXER_SECRET
    events = ["file.created", "file.modified"]
    paths = ["/acme/in/**/*.txt"]     # the login's home, then the folder

Run: FILEGATE_URL=http://127.0.0.1:9090 FILEGATE_USER=acme FILEGATE_PASSWORD=… \
     INDEXER_SECRET=… INDEXER_PORT=8099 INDEXER_STATE=./indexer.state python3 index_consumer.py

How it stays exactly-once in effect, the pattern document pipelines built next to filegate need:
1. filegate delivers each event at least once, in commit order (`data.seq` grows). The consumer
   keeps the last `seq` it finished in a state file (written atomically) and acknowledges anything
   at or below it without doing it again: redeliveries after a crash or a takeover are ignored.
2. Between writing the result and recording the seq the consumer could die; then the event comes
   again with a seq above the state. The result carries the event's id, so a result already written
   for this very event is recognised and not written twice.
3. It answers 2xx only after both; an error (the file cannot be fetched, its checksum is wrong)
   answers 500, and filegate delivers the event again later.
Standard library only.
"""
import base64
import collections
import hashlib
import hmac
import http.server
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

API = os.environ.get("FILEGATE_URL", "http://127.0.0.1:9090").rstrip("/") + "/api/v1"
LOGIN = base64.b64encode(
    f"{os.environ['FILEGATE_USER']}:{os.environ['FILEGATE_PASSWORD']}".encode()
).decode()
SECRET = os.environ["INDEXER_SECRET"]
KEY = base64.b64decode(SECRET[6:]) if SECRET.startswith("whsec_") else SECRET.encode()
PORT = int(os.environ.get("INDEXER_PORT", "8099"))
STATE = os.environ.get("INDEXER_STATE", "indexer.state")
# Every file this consumer processed, one line each (the test reads it to count).
JOURNAL = os.environ.get("INDEXER_JOURNAL")


def api(method, path, body=None):
    url = API + "/" + urllib.parse.quote(path.lstrip("/"), safe="/?=&")
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", "Basic " + LOGIN)
    if body is not None:
        request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def load_state():
    try:
        with open(STATE) as f:
            return json.load(f)["seq"]
    except FileNotFoundError:
        return 0


def save_state(seq):
    with open(STATE + ".tmp", "w") as f:
        json.dump({"seq": seq}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(STATE + ".tmp", STATE)


def verified(headers, body):
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(ts)) > 300:
        return False
    signed = f"{msg_id}.{ts}.".encode() + body
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(s[3:], expected)
        for s in headers["webhook-signature"].split()
        if s.startswith("v1,")
    )


def index(text):
    words = re.findall(r"\w+", text.lower())
    return {
        "lines": text.count("\n") + (0 if text.endswith("\n") or not text else 1),
        "words": len(words),
        "top": collections.Counter(words).most_common(5),
    }


HOME = None


def process(event):
    """Fetch, verify, index, write back. Raises on anything that should be retried."""
    global HOME
    if HOME is None:
        status, me = api("GET", "me")
        if status != 200:
            raise RuntimeError(f"/me answered {status}")
        HOME = json.loads(me)["home"].rstrip("/")
    data = event["data"]
    relative = data["path"][len(HOME):] if data["path"].startswith(HOME + "/") else data["path"]
    name = relative.rsplit("/", 1)[-1]
    result_path = f"out/{name}.index.json"
    # A result already written for this very event: the consumer died before recording its seq.
    status, existing = api("GET", "files/" + result_path)
    if status == 200 and json.loads(existing).get("event_id") == event["id"]:
        return False
    status, content = api("GET", "files/" + relative)
    if status != 200:
        raise RuntimeError(f"fetching {relative}: {status}")
    if hashlib.sha256(content).hexdigest() != data["sha256"]:
        raise RuntimeError(f"{relative}: content does not match the event's sha256")
    result = {"source": relative, "sha256": data["sha256"], "event_id": event["id"], "seq": data["seq"]}
    result.update(index(content.decode("utf-8", "replace")))
    status, _ = api("PUT", f"files/{result_path}?parents=true", json.dumps(result).encode())
    if status not in (200, 201):
        raise RuntimeError(f"writing {result_path}: {status}")
    return True


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not verified(self.headers, body):
            return self.answer(401)
        event = json.loads(body)
        seq = event["data"]["seq"]
        if seq <= load_state():
            return self.answer(204)          # done before: a redelivery
        if event["type"] in ("io.filegate.file.created", "io.filegate.file.modified"):
            try:
                did = process(event)
            except Exception as e:           # noqa: BLE001 - every failure is retried
                print(f"event {seq}: {e}; filegate will deliver it again", file=sys.stderr, flush=True)
                return self.answer(500)
            if did and JOURNAL:
                with open(JOURNAL, "a") as f:
                    f.write(event["data"]["path"] + "\n")
        save_state(seq)
        self.answer(204)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = http.server.HTTPServer(("127.0.0.1", PORT), Handler)
    print(f"indexer listening on 127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
