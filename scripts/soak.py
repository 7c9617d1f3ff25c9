#!/usr/bin/env python3
"""Soak: the release gateway on Redis with Mosquitto, under mixed FTP + SFTP + MQTT load for
SOAK_MINUTES (default 30), sampling every 10 s its RSS, open file descriptors, Redis memory, the
outbox backlog and throughput. Writes target/soak/soak.csv, docs/soak.png and a markdown summary
(stdout, and into docs/performance.md after its `<!-- soak -->` marker with --update-docs).

Not part of CI: `scripts/soak [--update-docs]`.
"""

import csv
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
INTERVAL = 10
PASSWORD = "soak-password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.events = 0

    def add(self, ok):
        with self.lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1


def main():
    update_docs = "--update-docs" in sys.argv
    work = tempfile.mkdtemp(prefix="filegate-soak-")
    out_dir = os.path.join(ROOT, "target", "soak")
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--bin", "filegate"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "filegate")

    redis_port, mqtt_port = free_port(), free_port()
    ftp_port, sftp_port, http_port = free_port(), free_port(), free_port()
    procs = []
    procs.append(subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", work,
         "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL))
    with open(os.path.join(work, "mosquitto.conf"), "w") as f:
        f.write(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    procs.append(subprocess.Popen(["mosquitto", "-c", os.path.join(work, "mosquitto.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(redis_port)
    wait_port(mqtt_port)

    key = os.path.join(work, "soak_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    public = open(key + ".pub").read().strip()
    hashed = subprocess.run([binary, "hash-password"], input=PASSWORD + "\n", capture_output=True,
                            text=True, check=True).stdout.strip()
    config = os.path.join(work, "filegate.toml")
    with open(config, "w") as f:
        f.write(f"""
[server]
data_dir = "{work}/data"
[storage]
backend = "redis"
[storage.redis]
url = "redis://127.0.0.1:{redis_port}/0"
[ftp]
listen = "127.0.0.1:{ftp_port}"
passive_ports = "{40000 + random.randint(0, 50) * 100}-{40000 + random.randint(0, 50) * 100 + 99}"
[sftp]
listen = "127.0.0.1:{sftp_port}"
host_keys = ["{work}/data/ssh_host_ed25519_key"]
[mqtt]
mode = "external"
url = "mqtt://127.0.0.1:{mqtt_port}"
commands = true
commands_user = "soak"
[http]
listen = "127.0.0.1:{http_port}"
[limits]
max_connections_per_ip = 500
[[users]]
name = "soak"
password_hash = "{hashed}"
authorized_keys = ["{public}"]
home = "/soak"
permissions = ["list", "read", "write", "delete", "mkdir", "rename"]
""")
    gateway = subprocess.Popen([binary, "serve", "--config", config], stdout=subprocess.PIPE,
                               stderr=open(os.path.join(out_dir, "gateway.log"), "w"), text=True)
    procs.append(gateway)
    for line in gateway.stdout:
        if line.startswith("filegate: storage"):
            break

    stop = threading.Event()
    stats = {"ftp": Stats(), "sftp": Stats(), "mqtt": Stats()}
    files = os.path.join(work, "files")
    os.makedirs(files)
    for i in range(8):
        with open(os.path.join(files, f"f{i}"), "wb") as f:
            f.write(os.urandom(random.choice([1_000, 64_000, 700_000, 3_000_000])))

    def ftp_worker(n):
        rng = random.Random(n)
        while not stop.is_set():
            src = os.path.join(files, f"f{rng.randrange(8)}")
            url = f"ftp://soak:{PASSWORD}@127.0.0.1:{ftp_port}/ftp{n}/x{rng.randrange(20)}.bin"
            up = subprocess.run(["curl", "-sS", "--ftp-create-dirs", "-T", src, url],
                                capture_output=True)
            down = subprocess.run(["curl", "-sS", url], capture_output=True)
            good = (up.returncode == 0 and down.returncode == 0
                    and hashlib.sha256(down.stdout).digest()
                    == hashlib.sha256(open(src, "rb").read()).digest())
            stats["ftp"].add(good)

    def sftp_worker(n):
        rng = random.Random(100 + n)
        batch = os.path.join(work, f"batch{n}")
        while not stop.is_set():
            src = os.path.join(files, f"f{rng.randrange(8)}")
            with open(batch, "w") as f:
                f.write(f"-mkdir sftp{n}\nput {src} sftp{n}/y.bin\nget sftp{n}/y.bin /dev/null\n"
                        f"rename sftp{n}/y.bin sftp{n}/z.bin\nrm sftp{n}/z.bin\n")
            r = subprocess.run(["sftp", "-b", batch, "-P", str(sftp_port), "-i", key,
                                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "soak@127.0.0.1"],
                               capture_output=True)
            stats["sftp"].add(r.returncode == 0)

    def mqtt_worker():
        rng = random.Random(7)
        while not stop.is_set():
            body = os.urandom(rng.choice([100, 10_000, 200_000]))
            r = subprocess.run(["mosquitto_pub", "-p", str(mqtt_port), "-q", "1",
                                "-t", f"filegate/commands/put/mqtt/m{rng.randrange(50)}.bin", "-s"],
                               input=body, capture_output=True)
            stats["mqtt"].add(r.returncode == 0)
            time.sleep(0.05)

    def event_counter():
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(mqtt_port), "-q", "1",
                                "-t", "filegate/events/#"], stdout=subprocess.PIPE)
        procs.append(sub)
        for _ in sub.stdout:
            stats["mqtt"].events += 1

    threads = [threading.Thread(target=ftp_worker, args=(i,), daemon=True) for i in range(3)]
    threads += [threading.Thread(target=sftp_worker, args=(i,), daemon=True) for i in range(2)]
    threads += [threading.Thread(target=mqtt_worker, daemon=True),
                threading.Thread(target=event_counter, daemon=True)]
    for t in threads:
        t.start()

    def metric(text, name):
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    rows = []
    started = time.time()
    pid = gateway.pid
    csv_path = os.path.join(out_dir, "soak.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seconds", "rss_mib", "fds", "redis_mib", "outbox_backlog", "transfers_ok",
                    "transfers_failed", "events_received"])
        while time.time() - started < MINUTES * 60:
            time.sleep(INTERVAL)
            status = open(f"/proc/{pid}/status").read()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            info = subprocess.run(["redis-cli", "-p", str(redis_port), "info", "memory"],
                                  capture_output=True, text=True).stdout
            redis_mib = int(re.search(r"used_memory:(\d+)", info).group(1)) / 1048576
            text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics").read().decode()
            backlog = metric(text, "filegate_outbox_backlog_events")
            ok = sum(s.ok for s in stats.values())
            failed = sum(s.failed for s in stats.values())
            row = [round(time.time() - started), round(rss, 1), fds, round(redis_mib, 1),
                   int(backlog), ok, failed, stats["mqtt"].events]
            rows.append(row)
            w.writerow(row)
            f.flush()
            print("\t".join(map(str, row)), flush=True)
    stop.set()
    for t in threads[:-1]:
        t.join(timeout=120)
    gateway.send_signal(signal.SIGTERM)
    code = gateway.wait(timeout=60)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    plot(rows, os.path.join(ROOT, "docs", "soak.png"))
    report = summary(rows, stats, code)
    print(report)
    if update_docs:
        path = os.path.join(ROOT, "docs", "performance.md")
        text = open(path).read() if os.path.exists(path) else "# Performance\n"
        text = text.split("<!-- soak -->")[0].rstrip() + "\n\n<!-- soak -->\n" + report
        open(path, "w").write(text)
    shutil.rmtree(work, ignore_errors=True)


def plot(rows, path):
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    minutes = [r[0] / 60 for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, col, title in [(axes[0][0], 1, "gateway RSS (MiB)"), (axes[0][1], 2, "open file descriptors"),
                           (axes[1][0], 3, "Redis used memory (MiB)"), (axes[1][1], 4, "outbox backlog (events)")]:
        ax.plot(minutes, [r[col] for r in rows])
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.suptitle("filegate soak: mixed FTP + SFTP + MQTT load")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def summary(rows, stats, code):
    def at(frac, col):
        return rows[min(len(rows) - 1, int(len(rows) * frac))][col]
    last = rows[-1]
    lines = [
        "## Soak",
        "",
        f"`scripts/soak`: {last[0] / 60:.0f} minutes of mixed load on the release gateway (Redis backend,",
        "Mosquitto): 3 FTP clients (curl upload + download + checksum), 2 OpenSSH sftp clients",
        "(put, get, rename, rm), MQTT put commands every 50 ms, one event subscriber; sampled every 10 s.",
        "",
        "![soak](soak.png)",
        "",
        "| | after 10 % | after 50 % | at the end |",
        "|---|---|---|---|",
        f"| gateway RSS (MiB) | {at(0.1, 1)} | {at(0.5, 1)} | {last[1]} |",
        f"| open file descriptors | {at(0.1, 2)} | {at(0.5, 2)} | {last[2]} |",
        f"| Redis used memory (MiB) | {at(0.1, 3)} | {at(0.5, 3)} | {last[3]} |",
        f"| outbox backlog | {at(0.1, 4)} | {at(0.5, 4)} | {last[4]} |",
        "",
        f"Operations: FTP {stats['ftp'].ok} ok / {stats['ftp'].failed} failed, SFTP {stats['sftp'].ok} ok / "
        f"{stats['sftp'].failed} failed, MQTT puts {stats['mqtt'].ok} ok / {stats['mqtt'].failed} failed; "
        f"{stats['mqtt'].events} events received. Exit code after SIGTERM: {code}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
