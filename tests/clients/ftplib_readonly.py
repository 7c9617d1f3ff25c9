"""A read-only user's RNFR is refused at once (550), as vsftpd does, not accepted with 350.

usage: ftplib_readonly.py HOST PORT USER PASSWORD EXISTING_FILE
"""

import ftplib
import sys

host, port, user, password, existing = sys.argv[1:6]
ftp = ftplib.FTP()
ftp.connect(host, int(port), timeout=30)
ftp.login(user, password)
try:
    reply = ftp.sendcmd(f"RNFR {existing}")
    sys.exit(f"ftplib: RNFR by a read-only user answered {reply!r}")
except ftplib.error_perm as e:
    if not str(e).startswith("550"):
        sys.exit(f"ftplib: RNFR refused with {e!r}, not 550")
ftp.voidcmd("NOOP")
ftp.quit()
