<?php
// PHPMailer (Debian libphp-phpmailer) over SMTP. usage: HOST PORT FROM TO CASE
require '/usr/share/php/libphp-phpmailer/autoload.php';

use PHPMailer\PHPMailer\PHPMailer;

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

$m = new PHPMailer(true);
$m->isSMTP();
$m->Host = $host;
$m->Port = (int)$port;
$m->SMTPAuth = false;
$m->SMTPAutoTLS = false;
$m->SMTPSecure = '';
$m->Timeout = 60;
$m->CharSet = PHPMailer::CHARSET_UTF8;
$m->setFrom($from, $case === 'utf8' ? 'Jürgen Müller' : 'Interop App');
$m->addAddress($to);
$m->Subject = $subjects[$case];
if ($case === 'html') {
    $m->isHTML(true);
    $m->Body = $html;
} else {
    $m->Body = $texts[$case];
}
if ($case === 'attach') {
    $m->addAttachment(__DIR__ . '/../report.bin', 'report.bin', PHPMailer::ENCODING_BASE64,
        'application/octet-stream');
}
try {
    $m->send();
} catch (Exception $e) {
    fwrite(STDERR, $m->ErrorInfo . "\n");
    exit(1);
}
echo "sent\n";
