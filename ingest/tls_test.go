package ingest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	netsmtp "net/smtp"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/internal/testcert"
)

// writeCert writes a fresh certificate for mx.test with the given common
// name to certPath and keyPath, and returns it. Its CA is trusted by no
// client: they skip verification, or fail on purpose.
func writeCert(t *testing.T, certPath, keyPath, cn string) *x509.Certificate {
	t.Helper()
	leaf := testcert.NewCA(t, cn+" CA").Issue(t, cn, []string{"mx.test"}, x509.ExtKeyUsageServerAuth)
	// Written to temporary names and renamed, as a renewal would be.
	for path, content := range map[string][]byte{certPath: leaf.CertPEM, keyPath: leaf.KeyPEM} {
		if err := os.WriteFile(path+".new", content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	return leaf.Cert
}

func tlsServer(t *testing.T, mutate func(*Config)) (certPath, keyPath string, pub *fakePublisher, addr string, srv *Server) {
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeCert(t, certPath, keyPath, "first")
	cfg := baseConfig()
	cfg.TLSCert, cfg.TLSKey = certPath, keyPath
	if mutate != nil {
		mutate(&cfg)
	}
	pub = &fakePublisher{}
	srv, addr = startServer(t, cfg, pub, nil)
	return certPath, keyPath, pub, addr, srv
}

// sendTLS delivers body over STARTTLS and returns the server's certificate.
func sendTLS(t *testing.T, addr, body string) *x509.Certificate {
	t.Helper()
	c, err := netsmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	if err := c.StartTLS(&tls.Config{ServerName: "mx.test", InsecureSkipVerify: true}); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	state, _ := c.TLSConnectionState()
	if err := c.Mail("a@sender.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("rcpt@example.com"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA over TLS: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	return state.PeerCertificates[0]
}

// TestSTARTTLS: with smtp.tls_cert and smtp.tls_key, STARTTLS is offered
// (TLS 1.2 and later), mail goes through it byte for byte, and the Received
// header says ESMTPS with the version and cipher.
func TestSTARTTLS(t *testing.T) {
	_, _, pub, addr, _ := tlsServer(t, nil)
	sendTLS(t, addr, simpleBody)
	msgs := pub.messages()
	if len(msgs) != 1 {
		t.Fatalf("published %d messages", len(msgs))
	}
	raw := string(msgs[0].Raw)
	if !strings.HasSuffix(raw, simpleBody) {
		t.Fatalf("body changed over TLS")
	}
	hdr := raw[:strings.Index(raw, "\r\n\tfor")]
	if !strings.Contains(hdr, "(using TLSv1.3 with cipher TLS_") || !strings.Contains(hdr, "SMTPS id") {
		t.Fatalf("Received header does not record the TLS session: %q", hdr)
	}
	// TLS 1.1 is refused.
	c := dial(t, addr)
	c.expect("", "220")
	c.expect("EHLO old.test", "250")
	c.expect("STARTTLS", "220")
	old := tls.Client(c.nc, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err := old.Handshake(); err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}

// TestSTARTTLSCertificateIsReloaded: a renewed certificate is served to the
// next session without a restart.
func TestSTARTTLSCertificateIsReloaded(t *testing.T) {
	certPath, keyPath, _, addr, _ := tlsServer(t, nil)
	if got := sendTLS(t, addr, simpleBody); got.Subject.CommonName != "first" {
		t.Fatalf("served %q, want the first certificate", got.Subject.CommonName)
	}
	renewed := writeCert(t, certPath, keyPath, "renewed")
	if got := sendTLS(t, addr, simpleBody); !got.Equal(renewed) {
		t.Fatalf("served %q after the renewal, want the renewed certificate", got.Subject.CommonName)
	}
	// A broken renewal keeps the last good certificate in use.
	if err := os.WriteFile(certPath, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := sendTLS(t, addr, simpleBody); !got.Equal(renewed) {
		t.Fatalf("served %q after a broken renewal, want the last good one", got.Subject.CommonName)
	}
}

// TestSTARTTLSKeepsTheDeadlinesAndTheSize: after STARTTLS the idle deadline
// still ends a silent session with a 421 the client can read (a TLS record,
// not plain text into the TLS stream), and a message of exactly the SIZE the
// EHLO inside TLS advertises is taken.
func TestSTARTTLSKeepsTheDeadlinesAndTheSize(t *testing.T) {
	_, _, pub, addr, _ := tlsServer(t, func(c *Config) {
		c.ReadTimeout = 300 * time.Millisecond
		c.MaxMessageBytes = 1024
	})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	plain := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	plain.expect("", "220")
	plain.expect("EHLO client.test", "250")
	plain.expect("STARTTLS", "220")
	tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	c := &client{t: t, nc: tc, br: bufio.NewReader(tc)}
	// Inside TLS the SIZE stays bare (no figure, RFC 1870: no information):
	// Levee cannot correct an encrypted reply. The limit still holds.
	if ehlo := c.expect("EHLO client.test", "250"); !slices.Contains(ehlo.lines, "250-SIZE") && !slices.Contains(ehlo.lines, "250 SIZE") {
		t.Fatalf("EHLO inside TLS: %v, want a bare SIZE", ehlo)
	}
	head := "Subject: size\r\n\r\n"
	body := func(n int) string { return head + strings.Repeat("x", n-len(head)-2) + "\r\n" }
	if r := c.send("a@sender.org", []string{"rcpt@example.com"}, body(1024)); r.code != 250 {
		t.Fatalf("a message of exactly smtp.max_message_bytes over TLS: %v", r)
	}
	if r := c.send("a@sender.org", []string{"rcpt@example.com"}, body(1025)); r.status() != "552 5.3.4" {
		t.Fatalf("one byte more over TLS: %v", r)
	}
	if len(pub.messages()) != 1 {
		t.Fatal("not published")
	}
	if r := c.mustRead(); r.status() != "421 4.4.2" {
		t.Fatalf("silent TLS session: %v, want 421 4.4.2", r)
	}
}

// TestFailedHandshakeGoesOnInPlainText: after a STARTTLS whose handshake
// fails half-way (the client does not trust the certificate and aborts),
// the session goes on unencrypted and is treated so: the idle deadline's
// goodbye is written, in plain text.
func TestFailedHandshakeGoesOnInPlainText(t *testing.T) {
	// The idle timeout also bounds each read of the handshake: it must
	// outlast the client's certificate check and abort (which took over
	// 300ms under -race in CI, and the server then rightly closed the
	// half-done handshake without a word), yet keep the test short.
	_, _, _, addr, _ := tlsServer(t, func(c *Config) { c.ReadTimeout = 2 * time.Second })
	c := dial(t, addr)
	c.expect("", "220")
	c.expect("EHLO old.test", "250")
	c.expect("STARTTLS", "220")
	distrustful := tls.Client(c.nc, &tls.Config{ServerName: "mx.test"}) // the test CA is not in its roots
	if err := distrustful.Handshake(); err == nil {
		t.Fatal("a handshake with an untrusted certificate succeeded")
	}
	// What follows on the wire: the rest of the server's handshake flight
	// that the client did not read, go-smtp's plain reply to the failed
	// handshake, then the idle goodbye, in plain text.
	var seen []byte
	for !bytes.Contains(seen, []byte("Handshake error\r\n")) {
		b, err := c.br.ReadByte()
		if err != nil {
			t.Fatalf("no reply to the failed handshake: %v (read %q)", err, seen)
		}
		seen = append(seen, b)
	}
	if r, err := c.read(); err != nil || r.status() != "421 4.4.2" {
		t.Fatalf("after a failed handshake: %v %v, want the idle goodbye 421 4.4.2", r, err)
	}
}
