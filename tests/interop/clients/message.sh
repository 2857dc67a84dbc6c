# Sourced by the shell clients (curl, msmtp): write_message FROM TO CASE FILE writes the
# case as a hand-made message with LF line ends, as a shell script or cron job makes it.
ew() { printf '=?UTF-8?B?%s?=' "$(printf '%s' "$1" | base64 -w0)"; }
write_message() {
    from=$1 to=$2 case=$3 out=$4
    name="Interop App"
    subject=""
    case $case in
        plain) subject="Interop plain ASCII" ;;
        utf8) subject=$(ew "Grüße aus Köln ✓ – Prüfung"); name=$(ew "Jürgen Müller") ;;
        attach) subject="Interop attachment" ;;
        html) subject="Interop long HTML line" ;;
    esac
    {
        printf 'From: %s <%s>\nTo: <%s>\nSubject: %s\nDate: %s\nMIME-Version: 1.0\n' \
            "$name" "$from" "$to" "$subject" "$(date -R)"
        case $case in
            plain) printf 'Content-Type: text/plain; charset=us-ascii\n\nHello from the interop matrix.\nSecond line, plain ASCII.\n' ;;
            utf8) printf 'Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\nGrüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n' ;;
            attach)
                printf 'Content-Type: multipart/mixed; boundary="sh-boundary"\n\n--sh-boundary\n'
                printf 'Content-Type: text/plain; charset=us-ascii\n\nThe report is attached.\n'
                printf -- '--sh-boundary\nContent-Type: application/octet-stream; name="report.bin"\n'
                printf 'Content-Disposition: attachment; filename="report.bin"\nContent-Transfer-Encoding: base64\n\n'
                base64 ../report.bin
                printf -- '--sh-boundary--\n' ;;
            html)
                printf 'Content-Type: text/html; charset=us-ascii\n\n<html><body>'
                i=0
                while [ $i -lt 250 ]; do printf '<p>interop long line</p>'; i=$((i + 1)); done
                printf '</body></html>\n' ;;
        esac
    } > "$out"
}
