#!/bin/sh
# msmtp as a relaying client (no config file, everything on the command line), reading
# a message with LF line ends from stdin as sendmail replacements do.
# usage: HOST PORT FROM TO CASE   (run in tests/interop/clients)
set -eu
. ./message.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
write_message "$3" "$4" "$5" "$tmp/msg.eml"
msmtp --file=/dev/null --host="$1" --port="$2" --tls=off --auth=off \
    --from="$3" -- "$4" < "$tmp/msg.eml"
echo sent
