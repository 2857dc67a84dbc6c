#!/bin/sh
# s-nail (mailx) sending through the sendmail entry point: its `mta` is a symlink named
# sendmail to the sealgate binary ($SEALGATE_SENDMAIL; SEALGATE_CONFIG says which
# sealgate). usage: HOST PORT FROM TO CASE (HOST, PORT unused; run in tests/interop/clients)
set -eu
from=$3 to=$4 case=$5
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
HOME=$tmp; export HOME
set -- -:/ -Sv15-compat -Smta="$SEALGATE_SENDMAIL" -Snosave -Sttycharset=utf-8 \
    -Ssendcharsets=utf-8 -Sexpandaddr=fail,-all,+addr
case $case in
    plain)
        printf 'Hello from the interop matrix.\nSecond line, plain ASCII.\n' |
            s-nail "$@" -r "Interop App <$from>" -s "Interop plain ASCII" "$to" ;;
    utf8)
        printf 'Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n' |
            s-nail "$@" -r "Jürgen Müller <$from>" -s "Grüße aus Köln ✓ – Prüfung" "$to" ;;
    attach)
        printf 'The report is attached.\n' |
            s-nail "$@" -r "Interop App <$from>" -s "Interop attachment" -a ../report.bin "$to" ;;
    html)
        i=0; { printf '<html><body>'
        while [ $i -lt 250 ]; do printf '<p>interop long line</p>'; i=$((i + 1)); done
        printf '</body></html>\n'; } |
            s-nail "$@" -r "Interop App <$from>" -s "Interop long HTML line" -M text/html "$to" ;;
esac
echo sent
