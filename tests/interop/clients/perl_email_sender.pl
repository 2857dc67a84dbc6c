#!/usr/bin/perl
# Perl Email::Sender (libemail-sender-perl) with Email::MIME, over SMTP.
# usage: HOST PORT FROM TO CASE
use strict;
use warnings;
use utf8;
use Email::MIME;
use Email::Sender::Simple qw(sendmail);
use Email::Sender::Transport::SMTP;
use File::Basename qw(dirname);

my ($host, $port, $from, $to, $case) = @ARGV;
my %subjects = (
    plain  => "Interop plain ASCII",
    utf8   => "Grüße aus Köln ✓ – Prüfung",
    attach => "Interop attachment",
    html   => "Interop long HTML line",
);
my %texts = (
    plain  => "Hello from the interop matrix.\nSecond line, plain ASCII.\n",
    utf8   => "Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n",
    attach => "The report is attached.\n",
);
my $html = "<html><body>" . ("<p>interop long line</p>" x 250) . "</body></html>";
my $name = $case eq "utf8" ? "Jürgen Müller" : "Interop App";
my @header = (From => "$name <$from>", To => $to, Subject => $subjects{$case});
my $email;
if ($case eq "attach") {
    open(my $fh, "<:raw", dirname(__FILE__) . "/../report.bin") or die "report.bin: $!";
    local $/; my $data = <$fh>; close $fh;
    $email = Email::MIME->create(
        header_str => \@header,
        parts => [
            Email::MIME->create(attributes => { content_type => "text/plain", charset => "UTF-8",
                encoding => "quoted-printable" }, body_str => $texts{$case}),
            Email::MIME->create(attributes => { content_type => "application/octet-stream",
                filename => "report.bin", disposition => "attachment", encoding => "base64",
                name => "report.bin" }, body => $data),
        ],
    );
} else {
    my $html_case = $case eq "html";
    $email = Email::MIME->create(
        header_str => \@header,
        attributes => { content_type => $html_case ? "text/html" : "text/plain", charset => "UTF-8",
            encoding => $html_case ? "7bit" : "8bit" },
        body_str => $html_case ? $html : $texts{$case},
    );
}
my $transport = Email::Sender::Transport::SMTP->new({ host => $host, port => $port, timeout => 60 });
eval { sendmail($email, { transport => $transport, from => $from, to => [$to] }); 1 }
    or do { my $e = $@; die(ref $e && $e->can("message") ? $e->message . "\n" : "$e\n") };
print "sent\n";
