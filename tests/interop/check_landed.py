#!/usr/bin/env python3
"""Decode a message as a recipient's mail program would, and print what it says.

usage: check_landed.py MESSAGE.eml

Parses the file with Python's email package (policy.default, the RFC 5322/6532 parser)
and prints one JSON object:
  {"subject": str, "from_name": str, "from_addr": str,
   "text": str|null,   first text/plain part that is not an attachment, decoded
   "html": str|null,   first text/html part that is not an attachment, decoded
   "attachments": [{"name": str, "sha256": hex, "size": int}],
   "defects": [str]}   parser defects, e.g. a header block that ended early
Decoded texts have CRLF turned into LF and trailing line ends removed, so that the
line-ending convention of the client (which the transport may rewrite) does not count
while every character of content does. Raw 8-bit UTF-8 in header fields (what some
clients send without encoded words) is read as UTF-8.
"""
import email
import email.header
import email.policy
import email.utils
import hashlib
import json
import sys


def fix8(value):
    """Header text with raw 8-bit bytes (surrogate-escaped by the parser) read as UTF-8."""
    if value is None:
        return ""
    value = str(value)
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return value


def norm(text):
    return text.replace("\r\n", "\n").rstrip("\n")


def main():
    with open(sys.argv[1], "rb") as f:
        raw = f.read()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    out = {"subject": fix8(msg.get("subject")), "from_name": "", "from_addr": "",
           "text": None, "html": None, "attachments": [], "defects": []}
    # The From display name is decoded by the RFC 2047 decoder (email.header) from the
    # raw field: policy.default's structured parser keeps the white space between two
    # encoded words ("=?utf-8?Q?J=C3=BCrgen?= =?utf-8?Q?_M=C3=BCller?=" gives two
    # spaces), which RFC 2047 section 6.2 says to drop.
    raw_msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    raw_from = next((fix8(v) for k, v in raw_msg.raw_items() if k.lower() == "from"), None)
    if raw_from is not None:
        try:
            pairs = email.utils.getaddresses([raw_from])
            if pairs:
                name, addr = pairs[0]
                out["from_name"] = str(email.header.make_header(
                    email.header.decode_header(name)))
                out["from_addr"] = addr
        except Exception as e:  # noqa: BLE001 - a broken From is reported, not fatal
            out["defects"].append("From: %s" % e)
    for part in msg.walk():
        for d in part.defects:
            out["defects"].append(type(d).__name__)
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        name = part.get_filename()
        is_att = part.get_content_disposition() == "attachment" or name is not None
        if is_att:
            data = part.get_payload(decode=True) or b""
            out["attachments"].append({"name": fix8(name), "size": len(data),
                                       "sha256": hashlib.sha256(data).hexdigest()})
            continue
        if ctype in ("text/plain", "text/html"):
            key = "text" if ctype == "text/plain" else "html"
            if out[key] is None:
                try:
                    content = part.get_content()
                except Exception:  # noqa: BLE001 - unknown charset: read as UTF-8
                    content = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
                out[key] = norm(fix8(content))
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
