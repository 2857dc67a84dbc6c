#!/usr/bin/env python3
"""smtplib.SMTP.send_message(msg): the email package's own serialisation (CRLF).
usage: HOST PORT FROM TO CASE"""
import smtplib
import sys

from interop_cases import email_message

host, port, frm, to, case = sys.argv[1:6]
msg = email_message(frm, to, case)
with smtplib.SMTP(host, int(port), timeout=60) as s:
    s.send_message(msg, from_addr=frm, to_addrs=[to])
