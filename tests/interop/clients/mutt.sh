#!/bin/sh
# mutt in batch mode sending through the sendmail entry point: $sendmail is a symlink
# named sendmail to the sealgate binary ($SEALGATE_SENDMAIL; SEALGATE_CONFIG says which
# sealgate). usage: HOST PORT FROM TO CASE (HOST, PORT unused; run in tests/interop/clients)
set -eu
from=$3 to=$4 case=$5
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
HOME=$tmp; export HOME
name="Interop App"
[ "$case" = utf8 ] && name="Jürgen Müller"
set -- -n -F /dev/null -e "set sendmail=\"$SEALGATE_SENDMAIL\"" -e "set from=\"$from\"" \
    -e "set realname=\"$name\"" -e 'set use_from=yes' -e 'set copy=no' -e 'set record=""' \
    -e 'set charset=utf-8' -e 'set send_charset=utf-8' -e "set folder=\"$tmp\""
export LANG=C.UTF-8
case $case in
    plain)
        printf 'Hello from the interop matrix.\nSecond line, plain ASCII.\n' > "$tmp/body"
        mutt "$@" -s "Interop plain ASCII" -- "$to" < "$tmp/body" ;;
    utf8)
        printf 'Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n' > "$tmp/body"
        mutt "$@" -s "Grüße aus Köln ✓ – Prüfung" -- "$to" < "$tmp/body" ;;
    attach)
        printf 'The report is attached.\n' > "$tmp/body"
        mutt "$@" -s "Interop attachment" -a ../report.bin -- "$to" < "$tmp/body" ;;
    html)
        i=0; { printf '<html><body>'
        while [ $i -lt 250 ]; do printf '<p>interop long line</p>'; i=$((i + 1)); done
        printf '</body></html>\n'; } > "$tmp/body"
        mutt "$@" -e 'set content_type=text/html' -s "Interop long HTML line" -- "$to" < "$tmp/body" ;;
esac
echo sent
