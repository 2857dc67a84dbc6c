"""The four messages every interop client sends (shared by the Python clients).

The same texts are written out in each client script of another language; the Rust
test (tests/interop_clients.rs) holds the expected values and compares them with what
tests/interop/check_landed.py decodes from the landed message.
"""
import os

SUBJECTS = {
    "plain": "Interop plain ASCII",
    "utf8": "Grüße aus Köln ✓ – Prüfung",
    "attach": "Interop attachment",
    "html": "Interop long HTML line",
}
TEXTS = {
    "plain": "Hello from the interop matrix.\nSecond line, plain ASCII.\n",
    "utf8": "Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n",
    "attach": "The report is attached.\n",
}
# One line of 6,026 octets.
HTML = "<html><body>" + "<p>interop long line</p>" * 250 + "</body></html>"
ATTACHMENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "report.bin")


def display_name(case):
    return "Jürgen Müller" if case == "utf8" else "Interop App"


def attachment_bytes():
    with open(ATTACHMENT, "rb") as f:
        return f.read()


def email_message(frm, to, case):
    """The case as an email.message.EmailMessage (policy.default)."""
    from email.message import EmailMessage
    from email.headerregistry import Address
    from email.utils import formatdate, make_msgid

    msg = EmailMessage()
    msg["From"] = Address(display_name(case), addr_spec=frm)
    msg["To"] = to
    msg["Subject"] = SUBJECTS[case]
    msg["Date"] = formatdate()
    msg["Message-ID"] = make_msgid(domain="interop.test")
    if case == "html":
        msg.set_content(HTML, subtype="html")
    else:
        msg.set_content(TEXTS[case])
    if case == "attach":
        msg.add_attachment(attachment_bytes(), maintype="application",
                           subtype="octet-stream", filename="report.bin")
    return msg
