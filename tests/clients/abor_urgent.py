"""ABOR the way lftp and other RFC 959 clients send it: Telnet "Interrupt Process", then "Synch"
(IAC DM) with the IAC as TCP urgent data, then the command. The gateway must answer it, and the
session must go on.

usage: abor_urgent.py HOST PORT USER PASSWORD
"""

import socket
import sys

host, port, user, password = sys.argv[1:5]
s = socket.create_connection((host, int(port)), timeout=10)
replies = s.makefile("rb")


def reply():
    line = replies.readline()
    if not line:
        sys.exit("abor_urgent: the connection was closed")
    return line.decode("utf-8", "replace")


def expect(command, code):
    s.sendall(command + b"\r\n")
    line = reply()
    if not line.startswith(code):
        sys.exit(f"abor_urgent: {command!r}: {line!r}")


if not reply().startswith("220"):
    sys.exit("abor_urgent: no greeting")
expect(b"USER " + user.encode(), "331")
expect(b"PASS " + password.encode(), "230")
# Several times, with a data connection open as during a transfer: whether the urgent byte stalls
# the reading of the control connection depends on how its bytes arrive.
for _ in range(5):
    s.sendall(b"EPSV\r\n")
    line = reply()
    if not line.startswith("229"):
        sys.exit(f"abor_urgent: EPSV: {line!r}")
    data = socket.create_connection((host, int(line.split("|||")[1].split("|")[0])), timeout=10)
    s.sendall(b"\xff\xf4\xff")
    s.send(b"\xf2", socket.MSG_OOB)
    try:
        expect(b"ABOR", "2")
    except socket.timeout:
        sys.exit("abor_urgent: no reply to ABOR after the Telnet Synch")
    data.close()
    expect(b"NOOP", "200")
expect(b"QUIT", "221")
