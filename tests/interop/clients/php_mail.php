<?php
// PHP mail() with sendmail_path pointing at `sealgate sendmail -t -i` (set by the test
// with -d sendmail_path=...); the message is built by hand, as PHP applications do.
// usage: HOST PORT FROM TO CASE (HOST and PORT unused: sendmail reads SEALGATE_CONFIG)
[$self, $host, $port, $from, $to, $case] = $argv;
$subjects = [
    'plain' => 'Interop plain ASCII',
    'utf8' => 'Grüße aus Köln ✓ – Prüfung',
    'attach' => 'Interop attachment',
    'html' => 'Interop long HTML line',
];
$texts = [
    'plain' => "Hello from the interop matrix.\nSecond line, plain ASCII.\n",
    'utf8' => "Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n",
    'attach' => "The report is attached.\n",
];
$html = '<html><body>' . str_repeat('<p>interop long line</p>', 250) . '</body></html>';
function ew($s) { return '=?UTF-8?B?' . base64_encode($s) . '?='; }

$name = $case === 'utf8' ? ew('Jürgen Müller') : 'Interop App';
$subject = $case === 'utf8' ? ew($subjects[$case]) : $subjects[$case];
$headers = ["From: $name <$from>", 'MIME-Version: 1.0'];
if ($case === 'html') {
    $headers[] = 'Content-Type: text/html; charset=UTF-8';
    $body = $html . "\n";
} elseif ($case === 'attach') {
    $b = 'php-' . md5('interop');
    $headers[] = "Content-Type: multipart/mixed; boundary=\"$b\"";
    $data = file_get_contents(__DIR__ . '/../report.bin');
    $body = "--$b\nContent-Type: text/plain; charset=UTF-8\n\n" . $texts[$case]
        . "--$b\nContent-Type: application/octet-stream; name=\"report.bin\"\n"
        . "Content-Disposition: attachment; filename=\"report.bin\"\n"
        . "Content-Transfer-Encoding: base64\n\n" . chunk_split(base64_encode($data), 76, "\n")
        . "--$b--\n";
} else {
    $headers[] = 'Content-Type: text/plain; charset=UTF-8';
    $headers[] = 'Content-Transfer-Encoding: 8bit';
    $body = $texts[$case];
}
if (!mail($to, $subject, $body, implode("\r\n", $headers))) {
    fwrite(STDERR, "mail() returned false: " . (error_get_last()['message'] ?? 'sendmail failed') . "\n");
    exit(1);
}
echo "sent\n";
