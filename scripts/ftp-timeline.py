#!/usr/bin/env python3
"""One FTP session's small-file uploads, step by step on the wire (docs/performance.md, "lftp's
small files, step by step"). Reads `tcpdump -tt -nn -A` text of the control connection and the
data connections on stdin and prints, for each step of an upload, the median time it took in µs:

    ftp-timeline.py CONTROL_PORT PASSIVE_LOW PASSIVE_HIGH

Run by `TIMELINE=1 scripts/bench-ingest`. A step is the gap between two marks on the wire: a
command or reply on the control connection, or a data connection's SYN or FIN."""
import re
import statistics
import sys

HEADER = re.compile(
    r"^(\d+\.\d+) IP [\d.]+\.(\d+) > [\d.]+\.(\d+): Flags \[([^\]]*)\].*length (\d+)"
)
COMMAND = re.compile(
    r"\b(PASV|EPSV|STOR|MFMT|SITE|TYPE|CWD|MKD|QUIT|FEAT|OPTS|USER|PASS|PWD|SIZE|MDTM|LIST|MLSD"
    r"|NLST|RETR|APPE|REST|NOOP|SYST|AUTH|PBSZ|PROT)\b"
)
# A reply: its code, then a space or a dash, then its text.
REPLY = re.compile(r"(\d{3})[ -][A-Za-z]")
# (from mark, to mark, label, whose time): the steps of one upload, in order.
STEPS = [
    ("C:PASV", "S:227", "`PASV` → `227`", "server"),
    ("S:227", "C:SYN", "`227` → data connection opened", "client"),
    ("C:SYN", "C:STOR", "opened → `STOR`", "client"),
    ("C:STOR", "S:150", "`STOR` → `150`", "server"),
    ("S:150", "C:DFIN", "`150` → the data's end (FIN)", "client"),
    ("C:DFIN", "S:DFIN", "data's end → the server closes the data connection", "server"),
    ("S:DFIN", "S:226", "→ `226`", "server"),
    ("S:226", "C:MFMT", "`226` → `MFMT`", "client"),
    ("C:MFMT", "S:213", "`MFMT` → `213`", "server"),
    ("S:*", "C:PASV", "last reply → next `PASV`", "client"),
]


def packets(lines):
    current = None
    for line in lines:
        m = HEADER.match(line)
        if m:
            if current:
                yield current
            t, sport, dport, flags, length = m.groups()
            current = dict(t=float(t), sport=int(sport), dport=int(dport), flags=flags,
                           length=int(length), text="")
        elif current is not None:
            current["text"] += line
    if current:
        yield current


def marks(pkts, control, low, high):
    for p in pkts:
        text = p["text"][-200:]
        if p["dport"] == control and p["length"] > 0:
            found = COMMAND.findall(text)
            yield p["t"], "C:" + (found[-1] if found else "?")
        elif p["sport"] == control and p["length"] > 0:
            found = REPLY.findall(text)
            yield p["t"], "S:" + (found[-1] if found else "?")
        elif low <= p["dport"] <= high and "S" in p["flags"] and "." not in p["flags"]:
            yield p["t"], "C:SYN"
        elif low <= p["dport"] <= high and "F" in p["flags"]:
            yield p["t"], "C:DFIN"
        elif low <= p["sport"] <= high and "F" in p["flags"]:
            yield p["t"], "S:DFIN"


def main():
    control, low, high = (int(a) for a in sys.argv[1:4])
    seq = list(marks(packets(sys.stdin), control, low, high))
    gaps = {}
    for (t0, a), (t1, b) in zip(seq, seq[1:]):
        gaps.setdefault((a, b), []).append((t1 - t0) * 1e6)
    for start, end, label, whose in STEPS:
        found = [v for (a, b), vs in gaps.items() for v in vs
                 if b == end and (a == start or (start == "S:*" and a.startswith("S:")))]
        median = f"{statistics.median(found):.0f}" if len(found) >= 50 else "–"
        print(f"{label}\t{whose}\t{median}")


if __name__ == "__main__":
    main()
