// Go's net/smtp (golang-go) with a message built by hand, as Go services do:
//   go run go_net_smtp.go HOST PORT FROM TO CASE   (in tests/interop/clients)
package main

import (
	"encoding/base64"
	"fmt"
	"mime"
	"net/smtp"
	"os"
	"strings"
)

func main() {
	host, port, from, to, kase := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	subjects := map[string]string{
		"plain":  "Interop plain ASCII",
		"utf8":   "Grüße aus Köln ✓ – Prüfung",
		"attach": "Interop attachment",
		"html":   "Interop long HTML line",
	}
	texts := map[string]string{
		"plain":  "Hello from the interop matrix.\r\nSecond line, plain ASCII.\r\n",
		"utf8":   "Grüße aus Köln: äöü ÄÖÜ ß € ✓\r\nZweite Zeile.\r\n",
		"attach": "The report is attached.\r\n",
	}
	html := "<html><body>" + strings.Repeat("<p>interop long line</p>", 250) + "</body></html>"
	name := "Interop App"
	if kase == "utf8" {
		name = mime.QEncoding.Encode("UTF-8", "Jürgen Müller")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMIME-Version: 1.0\r\n",
		name, from, to, mime.QEncoding.Encode("UTF-8", subjects[kase]))
	switch kase {
	case "html":
		fmt.Fprintf(&b, "Content-Type: text/html; charset=UTF-8\r\n\r\n%s\r\n", html)
	case "attach":
		data, err := os.ReadFile("../report.bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		enc := base64.StdEncoding.EncodeToString(data)
		var lines []string
		for len(enc) > 76 {
			lines = append(lines, enc[:76])
			enc = enc[76:]
		}
		lines = append(lines, enc)
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"go-boundary\"\r\n\r\n"+
			"--go-boundary\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n%s"+
			"--go-boundary\r\nContent-Type: application/octet-stream\r\n"+
			"Content-Disposition: attachment; filename=\"report.bin\"\r\n"+
			"Content-Transfer-Encoding: base64\r\n\r\n%s\r\n--go-boundary--\r\n",
			texts[kase], strings.Join(lines, "\r\n"))
	default:
		fmt.Fprintf(&b, "Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n%s", texts[kase])
	}
	// net/smtp.SendMail uses STARTTLS only when offered; sealgate's test listener offers none.
	if err := smtp.SendMail(host+":"+port, nil, from, []string{to}, []byte(b.String())); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("sent")
}
