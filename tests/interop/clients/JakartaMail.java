// Jakarta Mail (Debian libjakarta-mail-java) over SMTP, run as a single-file source:
//   java -cp /usr/share/java/jakarta-mail.jar:/usr/share/java/jakarta-activation.jar \
//        JakartaMail.java HOST PORT FROM TO CASE   (in tests/interop/clients)
import jakarta.mail.Message;
import jakarta.mail.MessagingException;
import jakarta.mail.Session;
import jakarta.mail.Transport;
import jakarta.mail.internet.InternetAddress;
import jakarta.mail.internet.MimeBodyPart;
import jakarta.mail.internet.MimeMessage;
import jakarta.mail.internet.MimeMultipart;
import java.io.File;
import java.util.Properties;

public class JakartaMail {
    public static void main(String[] a) throws Exception {
        String host = a[0], port = a[1], from = a[2], to = a[3], kase = a[4];
        String subject = switch (kase) {
            case "plain" -> "Interop plain ASCII";
            case "utf8" -> "Grüße aus Köln ✓ – Prüfung";
            case "attach" -> "Interop attachment";
            default -> "Interop long HTML line";
        };
        String text = switch (kase) {
            case "plain" -> "Hello from the interop matrix.\nSecond line, plain ASCII.\n";
            case "utf8" -> "Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile.\n";
            default -> "The report is attached.\n";
        };
        String html = "<html><body>" + "<p>interop long line</p>".repeat(250) + "</body></html>";
        Properties p = new Properties();
        p.put("mail.smtp.host", host);
        p.put("mail.smtp.port", port);
        p.put("mail.smtp.connectiontimeout", "60000");
        p.put("mail.smtp.timeout", "60000");
        Session session = Session.getInstance(p);
        MimeMessage m = new MimeMessage(session);
        m.setFrom(new InternetAddress(from, kase.equals("utf8") ? "Jürgen Müller" : "Interop App", "UTF-8"));
        m.setRecipient(Message.RecipientType.TO, new InternetAddress(to));
        m.setSubject(subject, "UTF-8");
        m.setSentDate(new java.util.Date());
        if (kase.equals("html")) {
            m.setText(html, "UTF-8", "html");
        } else if (kase.equals("attach")) {
            MimeBodyPart body = new MimeBodyPart();
            body.setText(text, "UTF-8");
            MimeBodyPart att = new MimeBodyPart();
            // The test runs every client in tests/interop/clients.
            att.attachFile(new File("../report.bin"), "application/octet-stream", "base64");
            att.setFileName("report.bin");
            MimeMultipart mp = new MimeMultipart();
            mp.addBodyPart(body);
            mp.addBodyPart(att);
            m.setContent(mp);
        } else {
            m.setText(text, "UTF-8");
        }
        try {
            Transport.send(m);
        } catch (MessagingException e) {
            System.err.println(e.getMessage());
            System.exit(1);
        }
        System.out.println("sent");
    }
}
