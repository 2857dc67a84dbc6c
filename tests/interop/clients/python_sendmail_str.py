#!/usr/bin/env python3
"""smtplib.SMTP.sendmail(frm, to, msg.as_string()) with the classic email.mime API
(compat32, UTF-8 text base64-encoded, us-ascii HTML sent as it is).
usage: HOST PORT FROM TO CASE"""
import smtplib
import sys
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, make_msgid

from interop_cases import HTML, SUBJECTS, TEXTS, attachment_bytes, display_name

host, port, frm, to, case = sys.argv[1:6]
if case == "attach":
    msg = MIMEMultipart()
    msg.attach(MIMEText(TEXTS[case], "plain", "us-ascii"))
    att = MIMEApplication(attachment_bytes(), "octet-stream")
    att.add_header("Content-Disposition", "attachment", filename="report.bin")
    msg.attach(att)
elif case == "html":
    msg = MIMEText(HTML, "html", "us-ascii")
elif case == "utf8":
    msg = MIMEText(TEXTS[case], "plain", "utf-8")
else:
    msg = MIMEText(TEXTS[case], "plain", "us-ascii")
msg["From"] = formataddr((display_name(case), frm))
msg["To"] = to
msg["Subject"] = Header(SUBJECTS[case], "utf-8")
msg["Date"] = formatdate()
msg["Message-ID"] = make_msgid(domain="interop.test")
with smtplib.SMTP(host, int(port), timeout=60) as s:
    s.sendmail(frm, [to], msg.as_string())
