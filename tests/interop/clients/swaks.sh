#!/bin/sh
# swaks, with its own message building (--header, --body, --attach).
# usage: HOST PORT FROM TO CASE   (run in tests/interop/clients)
set -eu
ew() { printf '=?UTF-8?B?%s?=' "$(printf '%s' "$1" | base64 -w0)"; }
host=$1 port=$2 from=$3 to=$4 case=$5
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
set -- --server "$host" --port "$port" --from "$from" --to "$to" --timeout 60 --silent 1
case $case in
    plain)
        printf 'Hello from the interop matrix.\nSecond line, plain ASCII.\n' > "$tmp/body"
        swaks "$@" --header "From: Interop App <$from>" --header "Subject: Interop plain ASCII" \
            --body "@$tmp/body" ;;
    utf8)
        printf 'Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n' > "$tmp/body"
        swaks "$@" --header "From: $(ew 'Jürgen Müller') <$from>" \
            --header "Subject: $(ew 'Grüße aus Köln ✓ – Prüfung')" \
            --add-header "MIME-Version: 1.0" \
            --add-header "Content-Type: text/plain; charset=UTF-8" \
            --add-header "Content-Transfer-Encoding: 8bit" --body "@$tmp/body" ;;
    attach)
        swaks "$@" --header "From: Interop App <$from>" --header "Subject: Interop attachment" \
            --body "The report is attached." \
            --attach-type application/octet-stream --attach-name report.bin --attach @../report.bin ;;
    html)
        i=0; { printf '<html><body>'
        while [ $i -lt 250 ]; do printf '<p>interop long line</p>'; i=$((i + 1)); done
        printf '</body></html>\n'; } > "$tmp/body"
        swaks "$@" --header "From: Interop App <$from>" --header "Subject: Interop long HTML line" \
            --add-header "MIME-Version: 1.0" --add-header "Content-Type: text/html; charset=us-ascii" \
            --body "@$tmp/body" ;;
esac
echo sent
