#!/usr/bin/env ruby
# Ruby's `mail` gem (Debian ruby-mail) delivering with net/smtp.
# usage: HOST PORT FROM TO CASE
require 'mail'

host, port, from, to, kase = ARGV
subjects = {
  'plain' => 'Interop plain ASCII',
  'utf8' => 'Grüße aus Köln ✓ – Prüfung',
  'attach' => 'Interop attachment',
  'html' => 'Interop long HTML line',
}
texts = {
  'plain' => "Hello from the interop matrix.\nSecond line, plain ASCII.\n",
  'utf8' => "Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n",
  'attach' => "The report is attached.\n",
}
html = '<html><body>' + ('<p>interop long line</p>' * 250) + '</body></html>'
name = kase == 'utf8' ? 'Jürgen Müller' : 'Interop App'

mail = Mail.new
mail.charset = 'UTF-8'
mail.from = "#{name} <#{from}>"
mail.to = to
mail.subject = subjects[kase]
if kase == 'html'
  mail.content_type = 'text/html; charset=UTF-8'
  mail.body = html
else
  mail.body = texts[kase]
end
if kase == 'attach'
  mail.add_file(filename: 'report.bin',
                content: File.binread(File.join(__dir__, '..', 'report.bin')),
                mime_type: 'application/octet-stream')
end
mail.delivery_method :smtp, address: host, port: port.to_i, enable_starttls_auto: false,
                            open_timeout: 60, read_timeout: 60
begin
  mail.deliver!
rescue StandardError => e
  warn "#{e.class}: #{e.message}"
  exit 1
end
puts 'sent'
