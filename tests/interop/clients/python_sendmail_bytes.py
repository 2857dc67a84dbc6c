#!/usr/bin/env python3
"""smtplib.SMTP.sendmail(frm, to, msg.as_bytes()): LF line ends, 8-bit text as the
email package makes it. usage: HOST PORT FROM TO CASE"""
import smtplib
import sys

from interop_cases import email_message

host, port, frm, to, case = sys.argv[1:6]
msg = email_message(frm, to, case)
with smtplib.SMTP(host, int(port), timeout=60) as s:
    s.sendmail(frm, [to], msg.as_bytes())
