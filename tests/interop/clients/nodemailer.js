#!/usr/bin/env node
// nodemailer (npm, tests/interop/node) over SMTP, as a Node.js application sends mail.
// usage: HOST PORT FROM TO CASE
'use strict';
const path = require('path');
const nodemailer = require(path.join(__dirname, '..', 'node', 'node_modules', 'nodemailer'));

const [host, port, from, to, kase] = process.argv.slice(2);
const subjects = {
  plain: 'Interop plain ASCII',
  utf8: 'Grüße aus Köln ✓ – Prüfung',
  attach: 'Interop attachment',
  html: 'Interop long HTML line',
};
const texts = {
  plain: 'Hello from the interop matrix.\nSecond line, plain ASCII.\n',
  utf8: 'Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n',
  attach: 'The report is attached.\n',
};
const html = '<html><body>' + '<p>interop long line</p>'.repeat(250) + '</body></html>';

const mail = {
  from: { name: kase === 'utf8' ? 'Jürgen Müller' : 'Interop App', address: from },
  to,
  subject: subjects[kase],
};
if (kase === 'html') mail.html = html; else mail.text = texts[kase];
if (kase === 'attach') {
  mail.attachments = [{ filename: 'report.bin', path: path.join(__dirname, '..', 'report.bin'),
    contentType: 'application/octet-stream' }];
}
const transport = nodemailer.createTransport({
  host, port: Number(port), secure: false, ignoreTLS: true,
  connectionTimeout: 60000, greetingTimeout: 60000, socketTimeout: 60000,
});
transport.sendMail(mail).then(
  (info) => { console.log(info.response); },
  (err) => { console.error(String(err.response || err.message)); process.exit(1); },
);
