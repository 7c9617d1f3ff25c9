"""Python's ftplib against the gateway, as a user's script would drive it.

usage: ftplib_client.py MODE HOST PORT USER PASSWORD [IMPLICIT_PORT]
MODE: plain (FTP), explicit (FTP_TLS, AUTH TLS + PROT P) or implicit (TLS from the first byte).

Uploads, lists (LIST, NLST, MLSD with chosen facts), renames, downloads and compares bytes, and
checks the replies clients depend on. Exits non-zero with the failing step on any difference.
The test (tests/gateway/clients_ftp.rs) checks the events the gateway published for it.
"""

import ftplib
import io
import os
import ssl
import sys


class ImplicitFTPS(ftplib.FTP_TLS):
    """FTP_TLS whose control connection is TLS from the first byte (port 990 style)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sock = None

    @property
    def sock(self):
        return self._sock

    @sock.setter
    def sock(self, value):
        if value is not None and not isinstance(value, ssl.SSLSocket):
            value = self.context.wrap_socket(value, server_hostname=self.host)
        self._sock = value


def expect(cond, what):
    if not cond:
        sys.exit(f"ftplib: {what}")


def refused(call, code):
    """The error reply of a call that must be refused with `code`."""
    try:
        call()
    except ftplib.all_errors as e:
        text = str(e)
        expect(text.startswith(code), f"expected {code}, got {text!r}")
        return text
    sys.exit(f"ftplib: expected a {code} refusal")


def main():
    mode, host, port, user, password = sys.argv[1:6]
    port = int(port)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if mode == "plain":
        ftp = ftplib.FTP()
    elif mode == "explicit":
        ftp = ftplib.FTP_TLS(context=context)
    elif mode == "implicit":
        ftp = ImplicitFTPS(context=context)
    else:
        sys.exit(f"unknown mode {mode}")
    ftp.connect(host, port, timeout=30)
    ftp.login(user, password)
    if mode != "plain":
        ftp.prot_p()

    # A rejected command gets its 5xx and the session goes on (issue 15, item 3).
    reply = ftp.sendcmd("OPTS MLST type;size;")
    expect(reply.startswith("200") and "type;size;" in reply, f"OPTS MLST: {reply!r}")
    refused(lambda: ftp.sendcmd("MODE Z"), "5")
    ftp.voidcmd("NOOP")
    feat = ftp.sendcmd("FEAT")
    expect("MLST type*;size*;modify;" in feat, f"FEAT after OPTS MLST: {feat!r}")
    ftp.sendcmd("OPTS MLST type;size;modify;")

    # MKD answers the quoted name (RFC 959); an existing name is said to exist.
    expect(ftp.mkd("py") == "/py", "MKD reply without the quoted name")
    text = refused(lambda: ftp.mkd("py"), "550")
    expect("exist" in text, f"MKD of an existing directory: {text!r}")
    ftp.cwd("py")
    expect(ftp.pwd() == "/py", f"PWD {ftp.pwd()!r}")

    data = os.urandom(300_000)
    ftp.storbinary("STOR data.bin", io.BytesIO(data))
    ftp.storbinary("STOR empty.bin", io.BytesIO(b""))
    ftp.voidcmd("NOOP")  # the control connection is in step after the uploads

    facts = dict(ftp.mlsd(facts=["type", "size"]))
    expect(facts.get("data.bin", {}).get("size") == "300000", f"MLSD {facts!r}")
    expect(facts.get("empty.bin", {}).get("size") == "0", f"MLSD {facts!r}")
    expect(sorted(ftp.nlst()) == ["data.bin", "empty.bin"], f"NLST {ftp.nlst()!r}")
    lines = []
    ftp.retrlines("LIST", lines.append)
    expect(any(line.endswith(" data.bin") and "300000" in line for line in lines), f"LIST {lines!r}")

    ftp.rename("data.bin", "final.bin")
    out = io.BytesIO()
    ftp.retrbinary("RETR final.bin", out.write)
    expect(out.getvalue() == data, "downloaded bytes differ")
    expect(ftp.size("final.bin") == 300_000, "SIZE")

    # A REST offset is for the next transfer only, even when that one fails.
    ftp.sendcmd("REST 1000")
    refused(lambda: ftp.retrbinary("RETR nosuch.bin", out.write), "550")
    again = io.BytesIO()
    ftp.retrbinary("RETR final.bin", again.write)
    expect(again.getvalue() == data, "a REST offset outlived its failed transfer")

    # A listing of a missing directory is refused before any 150 (issue 15, item 6).
    refused(lambda: ftp.transfercmd("LIST nosuchdir"), "550")
    refused(lambda: ftp.transfercmd("MLSD nosuchdir"), "550")
    ftp.voidcmd("NOOP")

    # Modification times: MFMT and both forms of SITE UTIME (issue 15, item 10).
    reply = ftp.sendcmd("MFMT 20200102030405 final.bin")
    expect(reply == "213 Modify=20200102030405; final.bin", f"MFMT: {reply!r}")
    expect(ftp.sendcmd("MDTM final.bin") == "213 20200102030405", "MDTM after MFMT")
    ftp.sendcmd("SITE UTIME 20210203040506 final.bin")
    expect(ftp.sendcmd("MDTM final.bin") == "213 20210203040506", "MDTM after SITE UTIME")
    ftp.sendcmd("SITE UTIME final.bin 20220101000000 20220304050607 20220101000000 UTC")
    expect(ftp.sendcmd("MDTM final.bin") == "213 20220304050607", "MDTM after SITE UTIME (5 args)")
    # A refusal says why, like every other one (vendor/libunftp patch 0014).
    text = refused(lambda: ftp.sendcmd("MFMT 20200102030405 nosuch.bin"), "550")
    expect("/nosuch.bin" in text and "no such file" in text, f"MFMT refusal: {text!r}")

    # CWD .. never climbs above the home, and PWD says so.
    ftp.cwd("..")
    ftp.cwd("..")
    expect(ftp.pwd() == "/", f"PWD above the home: {ftp.pwd()!r}")
    ftp.quit()


if __name__ == "__main__":
    main()
