"""Event clients for tests/gateway/http_events.rs: Server-Sent Events with `requests` (streaming) and a
WebSocket with `websockets` (both pinned in scripts/test).

    events_client.py sse BASE USER AFTER STOP   print each event as one JSON line until the event
    events_client.py ws  BASE USER AFTER STOP   whose subject ends with STOP; AFTER '-' = live only
    events_client.py resume BASE                disconnect/resume scenario (SSE, then WebSocket)
    events_client.py gone BASE                  410 after the history was trimmed

The stream clients print "READY" once the stream is open (the subscription exists from then on).
Every line is flushed at once: the test reads them as they come.
"""

import base64
import json
import os
import socket
import sys
import threading
import time
import traceback

import requests

PASSWORD = "secret"


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def sse_messages(resp):
    """(id, data) per SSE message of a streaming `requests` response; comments are skipped."""
    event_id, data = None, []
    for raw in resp.iter_lines(decode_unicode=False):
        line = raw.decode("utf-8")
        if line == "":
            if data:
                yield event_id, "\n".join(data)
            event_id, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


def sse_open(base, user, after=None, last_event_id=None, timeout=60):
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    params = {} if after is None else {"after": str(after)}
    return requests.get(
        base + "/events",
        headers=headers,
        params=params,
        auth=(user, PASSWORD),
        stream=True,
        timeout=timeout,
    )


def summary(event_id, doc):
    d = doc["data"]
    return {
        "id": int(event_id),
        "seq": d["seq"],
        "type": doc["type"],
        "subject": doc["subject"],
        "complete": d.get("complete"),
        "protocol": d["protocol"],
        "specversion": doc["specversion"],
    }


def stream_sse(base, user, after, stop):
    r = sse_open(base, user, after=None if after == "-" else after)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("text/event-stream"), r.headers
    out("READY")
    for event_id, data in sse_messages(r):
        s = summary(event_id, json.loads(data))
        out(json.dumps(s))
        if s["subject"].endswith(stop):
            return


def ws_url(base, user, after):
    host = base.split("://", 1)[1]
    url = "ws://" + host + "/events/ws"
    if after not in (None, "-"):
        url += "?after=" + str(after)
    auth = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return url, {"Authorization": "Basic " + auth}


def stream_ws(base, user, after, stop):
    from websockets.sync.client import connect

    url, headers = ws_url(base, user, after)
    with connect(url, additional_headers=headers, open_timeout=30) as ws:
        out("READY")
        while True:
            doc = json.loads(ws.recv(timeout=60))
            s = summary(doc["data"]["seq"], doc)
            out(json.dumps(s))
            if s["subject"].endswith(stop):
                return


def put(base, user, name, body=b"x"):
    r = requests.put(
        base + "/files/" + name,
        params={"parents": "true"},
        data=body,
        auth=(user, PASSWORD),
        timeout=30,
    )
    assert r.status_code in (200, 201, 204), (r.status_code, r.text)


def last_seq(base, user):
    r = requests.get(base + "/events", params={"limit": "1"}, auth=(user, PASSWORD), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["last_seq"]


def resume(base):
    """Events arrive while a client is disconnected and while it reconnects: after resuming with
    Last-Event-ID (SSE) or ?after= (WebSocket) it has every one of them once, in order."""
    for kind in ("sse", "ws"):
        start = last_seq(base, "alice")
        names = [f"{kind}-{i:02}.txt" for i in range(40)]

        def writer():
            try:
                for n in names:
                    put(base, "alice", "resume/" + n)
                    # Some writes land while the client is away, some while it reconnects.
                    time.sleep(0.01)
            except BaseException:
                traceback.print_exc()
                os._exit(1)

        seen = []
        if kind == "sse":
            r = sse_open(base, "alice", after=start)
            assert r.status_code == 200, r.text
            w = threading.Thread(target=writer)
            w.start()
            messages = sse_messages(r)
            for event_id, data in messages:
                seen.append(summary(event_id, json.loads(data)))
                if len(seen) == 10:
                    break
            r.close()
            resumed = sse_open(base, "alice", last_event_id=seen[-1]["id"])
            assert resumed.status_code == 200, resumed.text
            for event_id, data in sse_messages(resumed):
                seen.append(summary(event_id, json.loads(data)))
                if seen[-1]["subject"].endswith(names[-1]):
                    break
            resumed.close()
        else:
            from websockets.sync.client import connect

            url, headers = ws_url(base, "alice", start)
            w = threading.Thread(target=writer)
            with connect(url, additional_headers=headers, open_timeout=30) as ws:
                w.start()
                while len(seen) < 10:
                    doc = json.loads(ws.recv(timeout=60))
                    seen.append(summary(doc["data"]["seq"], doc))
            url, headers = ws_url(base, "alice", seen[-1]["id"])
            with connect(url, additional_headers=headers, open_timeout=30) as ws:
                while not seen[-1]["subject"].endswith(names[-1]):
                    doc = json.loads(ws.recv(timeout=60))
                    seen.append(summary(doc["data"]["seq"], doc))
        w.join()
        # The first put also made the directory (`?parents=true`): its event is in the stream too.
        assert seen[0]["subject"] == "/home/alice/resume" or kind == "ws", seen[0]
        seen = [s for s in seen if "/resume/" + kind in s["subject"]]
        subjects = [s["subject"] for s in seen]
        assert subjects == ["/home/alice/resume/" + n for n in names], (kind, subjects)
        ids = [s["id"] for s in seen]
        assert ids == sorted(set(ids)), (kind, "ids increase, no duplicate", ids)
        assert all(s["id"] == s["seq"] for s in seen), seen
        # The JSON replay pages over the same events: the same ids, whatever the page size.
        after, paged = start, []
        while True:
            r = requests.get(
                base + "/events",
                params={"after": str(after), "limit": "7"},
                auth=("alice", PASSWORD),
                timeout=30,
            )
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["events"]) <= 7
            paged += [e["data"]["seq"] for e in page["events"] if "/resume/" + kind in e["subject"]]
            if page["next_after"] >= ids[-1] or page["next_after"] == after:
                break
            after = page["next_after"]
        assert paged == ids, (kind, paged, ids)
        out(f"{kind} ok {len(ids)}")
    out("ok")


def gone(base):
    """The history keeps 5 events here: resuming from before them is a 410 with oldest_seq,
    before any stream starts, on every way in."""
    r = requests.get(base + "/events", auth=("alice", PASSWORD), timeout=30)
    assert r.status_code == 200, r.text
    page = r.json()
    last = page["last_seq"]
    oldest = last - 4
    assert [e["data"]["seq"] for e in page["events"]] == list(range(oldest, last + 1)), page
    for params, headers in (
        ({"after": "1"}, {}),
        ({}, {"Accept": "text/event-stream", "Last-Event-ID": "1"}),
        ({"after": "1"}, {"Accept": "text/event-stream"}),
    ):
        r = requests.get(base + "/events", params=params, headers=headers, auth=("alice", PASSWORD), timeout=30)
        assert r.status_code == 410, (params, headers, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", r.headers
        p = r.json()
        assert p["status"] == 410 and p["oldest_seq"] == oldest, p
    from websockets.sync.client import connect
    from websockets.exceptions import InvalidStatus

    url, headers = ws_url(base, "alice", 1)
    try:
        connect(url, additional_headers=headers, open_timeout=30)
        raise AssertionError("the WebSocket opened although event 2 is gone")
    except InvalidStatus as e:
        assert e.response.status_code == 410, e.response.status_code
        assert json.loads(e.response.body)["oldest_seq"] == oldest
    # Resuming right before the oldest kept works; so does a bad value fail cleanly.
    r = requests.get(base + "/events", params={"after": str(oldest - 1)}, auth=("alice", PASSWORD), timeout=30)
    assert r.status_code == 200 and len(r.json()["events"]) == 5, r.text
    r = requests.get(base + "/events", params={"after": "x"}, auth=("alice", PASSWORD), timeout=30)
    assert r.status_code == 400, r.text
    r = requests.get(base + "/events", params={"after": str(last + 100)}, auth=("alice", PASSWORD), timeout=30)
    assert r.status_code == 400 and r.json()["last_seq"] == last, r.text
    out("ok")


def cut_upload(base, user, name):
    """A PUT whose body stops half-way: kept as an incomplete file."""
    host, port = base.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    auth = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    s = socket.create_connection((host, int(port)))
    s.sendall(
        f"PUT /api/v1/files/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {auth}\r\n"
        "Content-Length: 200000\r\n\r\n".encode()
        + b"y" * 100000
    )
    s.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    base = sys.argv[2]
    if cmd == "sse":
        stream_sse(base, sys.argv[3], sys.argv[4], sys.argv[5])
    elif cmd == "ws":
        stream_ws(base, sys.argv[3], sys.argv[4], sys.argv[5])
    elif cmd == "resume":
        resume(base)
    elif cmd == "gone":
        gone(base)
    elif cmd == "cut":
        cut_upload(base, sys.argv[3], sys.argv[4])
    else:
        raise SystemExit("unknown command " + cmd)
