#!/usr/bin/perl
# Perl Net::SMTP (perl core) with a message built by hand, as old Perl scripts do;
# datasend turns "\n" into CRLF. usage: HOST PORT FROM TO CASE
use strict;
use warnings;
use Encode qw(encode);
use MIME::Base64 qw(encode_base64);
use Net::SMTP;
use File::Basename qw(dirname);

my ($host, $port, $from, $to, $case) = @ARGV;
my %subjects = (
    plain  => "Interop plain ASCII",
    utf8   => "Gr\x{fc}\x{df}e aus K\x{f6}ln \x{2713} \x{2013} Pr\x{fc}fung",
    attach => "Interop attachment",
    html   => "Interop long HTML line",
);
my %texts = (
    plain  => "Hello from the interop matrix.\nSecond line, plain ASCII.\n",
    utf8   => "Gr\x{fc}\x{df}e aus K\x{f6}ln: \x{e4}\x{f6}\x{fc} \x{c4}\x{d6}\x{dc} \x{df} \x{20ac} \x{2713}\nZweite Zeile.\n",
    attach => "The report is attached.\n",
);
my $html = "<html><body>" . ("<p>interop long line</p>" x 250) . "</body></html>";
sub ew { my $s = shift; return "=?UTF-8?B?" . encode_base64(encode("UTF-8", $s), "") . "?=" }

my $name = $case eq "utf8" ? ew("J\x{fc}rgen M\x{fc}ller") : "Interop App";
my $head = "From: $name <$from>\nTo: <$to>\nSubject: " . ($case eq "utf8" ? ew($subjects{$case}) : $subjects{$case})
    . "\nMIME-Version: 1.0\n";
my $msg;
if ($case eq "html") {
    $msg = $head . "Content-Type: text/html; charset=us-ascii\n\n$html\n";
} elsif ($case eq "utf8") {
    $msg = $head . "Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n"
        . encode("UTF-8", $texts{$case});
} elsif ($case eq "attach") {
    open(my $fh, "<:raw", dirname(__FILE__) . "/../report.bin") or die "report.bin: $!";
    local $/; my $data = <$fh>; close $fh;
    $msg = $head . "Content-Type: multipart/mixed; boundary=\"=_perl_boundary\"\n\n"
        . "--=_perl_boundary\nContent-Type: text/plain; charset=us-ascii\n\n$texts{$case}"
        . "--=_perl_boundary\nContent-Type: application/octet-stream; name=\"report.bin\"\n"
        . "Content-Disposition: attachment; filename=\"report.bin\"\nContent-Transfer-Encoding: base64\n\n"
        . encode_base64($data) . "--=_perl_boundary--\n";
} else {
    $msg = $head . "Content-Type: text/plain; charset=us-ascii\n\n$texts{$case}";
}
my $smtp = Net::SMTP->new($host, Port => $port, Timeout => 60) or die "connect: $@";
$smtp->mail($from) or die "MAIL: " . $smtp->message;
$smtp->to($to) or die "RCPT: " . $smtp->code . " " . $smtp->message;
$smtp->data() or die "DATA: " . $smtp->code . " " . $smtp->message;
$smtp->datasend($msg);
$smtp->dataend() or die "end of data: " . $smtp->code . " " . $smtp->message;
print $smtp->code . " " . $smtp->message;
$smtp->quit;
