package ingest

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// certFiles is the STARTTLS certificate, read from smtp.tls_cert and
// smtp.tls_key and read again when either file changes, so that a renewal
// (cert-manager rewriting a mounted Secret, certbot's deploy hook) needs no
// restart. The files are looked at (two stats) on each handshake; a pair
// that does not load keeps the previous certificate in use and is logged.
type certFiles struct {
	certPath, keyPath string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp
	lastErr string
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// loadCertFiles reads the pair once: a start with a pair that does not load
// fails, naming the keys.
func loadCertFiles(certPath, keyPath string, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{certPath: certPath, keyPath: keyPath, log: log}
	if err := c.reload(); err != nil {
		return nil, fmt.Errorf("%w: smtp.tls_cert, smtp.tls_key: %v", ErrInvalidConfig, err)
	}
	return c, nil
}

// reload reads both files if they changed since the last load. Called with
// mu held, or before c is shared.
func (c *certFiles) reload() error {
	var stamp [2]fileStamp
	for i, p := range []string{c.certPath, c.keyPath} {
		s, err := stampOf(p)
		if err != nil {
			return err
		}
		stamp[i] = s
	}
	if c.cert != nil && stamp == c.stamp {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(c.certPath, c.keyPath)
	if err != nil {
		return err
	}
	c.cert, c.stamp = &cert, stamp
	return nil
}

// get is tls.Config.GetCertificate.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reload(); err != nil {
		if msg := err.Error(); msg != c.lastErr {
			c.lastErr = msg
			c.log.Warn("smtp: STARTTLS certificate not reloaded, the previous one stays in use", "cert", c.certPath, "key", c.keyPath, "err", err)
		}
	} else {
		c.lastErr = ""
	}
	return c.cert, nil
}

// tlsConfig is STARTTLS's configuration: TLS 1.2 and later, Go's default
// cipher suites (all AEAD with forward secrecy for TLS 1.2).
func (s *Server) tlsConfig(certs *certFiles) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: certs.get,
		// Called once the ClientHello is read, before the server's first
		// handshake byte: from here on the connection carries TLS records,
		// which trackedConn must pass through untouched.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if c, ok := hello.Conn.(*trackedConn); ok {
				c.tls.Store(true)
			}
			return nil, nil
		},
	}
}

// tlsComment is the Received header's note of the session's TLS, in
// Postfix's words: "using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256".
func tlsComment(state tls.ConnectionState) string {
	return "using " + strings.Replace(tls.VersionName(state.Version), " ", "v", 1) + " with cipher " + tls.CipherSuiteName(state.CipherSuite)
}
