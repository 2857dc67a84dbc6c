#!/bin/sh
# curl --mail-from --mail-rcpt --upload-file of a message file with LF line ends.
# usage: HOST PORT FROM TO CASE   (run in tests/interop/clients)
set -eu
. ./message.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
write_message "$3" "$4" "$5" "$tmp/msg.eml"
curl --verbose --silent --show-error --max-time 60 --url "smtp://$1:$2" \
    --mail-from "$3" --mail-rcpt "$4" --upload-file "$tmp/msg.eml"
echo sent
