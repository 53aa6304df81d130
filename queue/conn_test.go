package queue

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/levee-mail/levee/internal/redact"
	"github.com/levee-mail/levee/internal/testcert"
)

// These tests run Levee's queue against real nats-servers that demand
// credentials or client certificates: each configuration once as it
// should connect, and then with what is missing or wrong, which must fail
// at Open with an error that says where to look.

// secureServer starts a nats-server with JetStream in a fresh directory on
// a random port, configured by configure (authentication, TLS).
func secureServer(t *testing.T, configure func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: os.Getenv("LEVEE_TEST_NATS_LOG") == "",
		// Levee's default queue.max_msg_size, and the dead letters' headers.
		MaxPayload: 32 << 20,
	}
	configure(opts)
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	if !opts.NoLog {
		s.ConfigureLogger()
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	if !s.JetStreamEnabled() {
		t.Fatal("nats-server started without JetStream")
	}
	return s
}

// externalConfig is a queue on the external server at url.
func externalConfig(t *testing.T, url string, sec Security) Config {
	c := testConfig(t)
	c.DataDir = ""
	c.URL = url
	c.Security = sec
	return c
}

// openWith opens a queue with cfg and closes it at the end of the test; it
// returns Open's error and what the queue logged.
func openWith(t *testing.T, cfg Config) (*Queue, string, error) {
	t.Helper()
	logged := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	q, err := Open(context.Background(), cfg, nil, log)
	if err == nil {
		t.Cleanup(func() { _ = q.Close(context.Background()) })
	}
	return q, logged.String(), err
}

// lockedBuffer keeps what the queue logs, from its goroutines too.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mustOpen opens the queue and checks that it publishes through the
// authenticated connection.
func mustOpen(t *testing.T, cfg Config) string {
	t.Helper()
	q, logged, err := openWith(t, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !q.Conn().IsConnected() {
		t.Fatal("Open returned a queue that is not connected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := q.Publish(ctx, testMessage("secure-1", 512)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return logged
}

// mustRefuse opens the queue expecting an error that contains every one
// of want, and shows no secret.
func mustRefuse(t *testing.T, cfg Config, secret string, want ...string) error {
	t.Helper()
	_, logged, err := openWith(t, cfg)
	if err == nil {
		t.Fatal("Open succeeded, want an error")
	}
	t.Logf("Open: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Open: %v\nwant it to say %q", err, w)
		}
	}
	if secret != "" && strings.Contains(err.Error()+logged, secret) {
		t.Errorf("the password shows in the error or the log:\n%v\n%s", err, logged)
	}
	return err
}

func TestOpenWithUserAndPassword(t *testing.T) {
	t.Parallel()
	const user, password = "levee", "pw-s3cret-7f2a"
	s := secureServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: user, Password: password}}
	})
	url := s.ClientURL()
	t.Run("keys", func(t *testing.T) {
		logged := mustOpen(t, externalConfig(t, url, Security{User: user, Password: password}))
		if strings.Contains(logged, password) {
			t.Errorf("the password shows in the log:\n%s", logged)
		}
	})
	t.Run("in the URL", func(t *testing.T) {
		mustOpen(t, externalConfig(t, strings.Replace(url, "nats://", "nats://"+user+":"+password+"@", 1), Security{}))
	})
	t.Run("wrong password", func(t *testing.T) {
		err := mustRefuse(t, externalConfig(t, url, Security{User: user, Password: "wrong-s3cret"}), "wrong-s3cret",
			"Authorization Violation", "queue.nats_user", "queue.nats_password")
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("errors.Is(%v, nats.ErrAuthorization) = false", err)
		}
	})
	t.Run("wrong password in the URL", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, strings.Replace(url, "nats://", "nats://"+user+":wrong-s3cret@", 1), Security{}), "wrong-s3cret",
			"Authorization Violation", "xxxxx", "credentials in queue.nats_url")
	})
	t.Run("none", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{}), "", "Authorization Violation", "the server wants credentials")
	})
}

func TestOpenWithNKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seedFile := func(name string) (string, string) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		path := filepath.Join(dir, name)
		writeFile(t, path, string(seed)+"\n")
		return path, pub
	}
	good, pub := seedFile("levee.nk")
	stranger, _ := seedFile("stranger.nk")
	s := secureServer(t, func(o *server.Options) {
		o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	})
	url := s.ClientURL()

	t.Run("seed", func(t *testing.T) {
		mustOpen(t, externalConfig(t, url, Security{NkeySeed: good}))
	})
	t.Run("a seed the server does not know", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{NkeySeed: stranger}), "", "Authorization Violation", "queue.nats_nkey_seed")
	})
	t.Run("not a seed", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.nk")
		writeFile(t, bad, "not a seed\n")
		mustRefuse(t, externalConfig(t, url, Security{NkeySeed: bad}), "", "queue.nats_nkey_seed", bad)
	})
	t.Run("missing file", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{NkeySeed: filepath.Join(dir, "nope.nk")}), "", "queue.nats_nkey_seed", "no such file")
	})
}

// TestOpenWithCredentials runs a server in operator (JWT) mode, the setup a
// .creds file belongs to: an operator, an account with JetStream, a user.
func TestOpenWithCredentials(t *testing.T) {
	t.Parallel()
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	account := func() (nkeys.KeyPair, string) {
		akp, _ := nkeys.CreateAccount()
		apub, _ := akp.PublicKey()
		ac := jwt.NewAccountClaims(apub)
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		ajwt, err := ac.Encode(okp)
		if err != nil {
			t.Fatal(err)
		}
		return akp, ajwt
	}
	akp, ajwt := account()
	apub, _ := akp.PublicKey()
	// An account the server was never told about.
	unknown, _ := account()

	dir := t.TempDir()
	creds := func(name string, signer nkeys.KeyPair) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		useed, _ := ukp.Seed()
		uc := jwt.NewUserClaims(upub)
		ujwt, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		file, err := jwt.FormatUserConfig(ujwt, useed)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		writeFile(t, path, string(file))
		return path
	}
	// JetStream in operator mode needs a system account, without JetStream.
	skp, _ := nkeys.CreateAccount()
	spub, _ := skp.PublicKey()
	sjwt, err := jwt.NewAccountClaims(spub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	for pub, claims := range map[string]string{apub: ajwt, spub: sjwt} {
		if err := resolver.Store(pub, claims); err != nil {
			t.Fatal(err)
		}
	}
	s := secureServer(t, func(o *server.Options) {
		o.TrustedKeys = []string{opub}
		o.AccountResolver = resolver
		o.SystemAccount = spub
	})
	url := s.ClientURL()

	t.Run("creds", func(t *testing.T) {
		mustOpen(t, externalConfig(t, url, Security{Creds: creds("levee.creds", akp)}))
	})
	t.Run("a user of an unknown account", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{Creds: creds("stranger.creds", unknown)}), "", "Authorization Violation", "queue.nats_creds")
	})
	t.Run("not a creds file", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.creds")
		writeFile(t, bad, "-----BEGIN NATS USER JWT-----\nnot a jwt\n------END NATS USER JWT------\n")
		mustRefuse(t, externalConfig(t, url, Security{Creds: bad}), "", "queue.nats_creds", bad)
	})
	t.Run("none", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{}), "", "Authorization Violation", "the server wants credentials")
	})
}

func TestOpenWithTLSClientCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "Levee test CA")
	other := testcert.NewCA(t, "Some other CA")
	// issue writes a certificate of ca for this machine as <name>.crt and
	// <name>.key.
	issue := func(ca *testcert.CA, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		leaf := ca.Issue(t, name, []string{"127.0.0.1", "localhost"}, usage)
		certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		writeFile(t, certFile, string(leaf.CertPEM))
		writeFile(t, keyFile, string(leaf.KeyPEM))
		return certFile, keyFile
	}
	serverCert, serverKey := issue(ca, "server", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := issue(ca, "client", x509.ExtKeyUsageClientAuth)
	strangerCert, strangerKey := issue(other, "stranger", x509.ExtKeyUsageClientAuth)
	caFile, otherCAFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "other-ca.crt")
	writeFile(t, caFile, string(ca.PEM))
	writeFile(t, otherCAFile, string(other.PEM))

	s := secureServer(t, func(o *server.Options) {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: serverCert, KeyFile: serverKey, CaFile: caFile, Verify: true})
		if err != nil {
			t.Fatal(err)
		}
		o.TLS, o.TLSVerify, o.TLSConfig, o.TLSTimeout = true, true, tc, 5
	})
	url := strings.Replace(s.ClientURL(), "nats://", "tls://", 1)

	t.Run("CA and client certificate", func(t *testing.T) {
		mustOpen(t, externalConfig(t, url, Security{TLSCA: caFile, TLSCert: clientCert, TLSKey: clientKey}))
	})
	t.Run("no client certificate", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{TLSCA: caFile}), "", "queue.nats_tls_cert")
	})
	t.Run("a client certificate of another CA", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{TLSCA: caFile, TLSCert: strangerCert, TLSKey: strangerKey}), "", "queue.nats_tls_cert")
	})
	t.Run("server certificate of an untrusted CA", func(t *testing.T) {
		err := mustRefuse(t, externalConfig(t, url, Security{TLSCA: otherCAFile, TLSCert: clientCert, TLSKey: clientKey}), "", "queue.nats_tls_ca")
		if !errors.As(err, new(x509.UnknownAuthorityError)) {
			t.Errorf("errors.As(%v, x509.UnknownAuthorityError) = false", err)
		}
	})
	t.Run("certificate without its key", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{TLSCA: caFile, TLSCert: clientCert}), "", "queue.nats_tls_key: must be set with queue.nats_tls_cert")
	})
	t.Run("key of another certificate", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{TLSCA: caFile, TLSCert: clientCert, TLSKey: strangerKey}), "", "queue.nats_tls_cert, queue.nats_tls_key", "private key does not match")
	})
	t.Run("CA file missing", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{TLSCA: filepath.Join(dir, "nope.crt"), TLSCert: clientCert, TLSKey: clientKey}), "", "queue.nats_tls_ca", "no such file")
	})
	t.Run("CA file not PEM", func(t *testing.T) {
		mustRefuse(t, externalConfig(t, url, Security{TLSCA: serverKey, TLSCert: clientCert, TLSKey: clientKey}), "", "queue.nats_tls_ca", "failed to parse root certificate")
	})
}

func TestSecurityValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	writeFile(t, file, "x")
	for _, tc := range []struct {
		name string
		url  string
		sec  Security
		want string // "" for valid
	}{
		{"nothing", "nats://h:4222", Security{}, ""},
		{"embedded, nothing", "", Security{}, ""},
		{"embedded with creds", "", Security{Creds: file}, "queue.nats_creds: applies to an external NATS only"},
		{"embedded with a CA", "", Security{TLSCA: file}, "queue.nats_tls_ca: applies to an external NATS only"},
		{"user and password", "nats://h:4222", Security{User: "u", Password: "p"}, ""},
		{"user without password", "nats://h:4222", Security{User: "u"}, "queue.nats_password: must be set with queue.nats_user"},
		{"password without user", "nats://h:4222", Security{Password: "p"}, "queue.nats_user: must be set with queue.nats_password"},
		{"user twice", "nats://u:p@h:4222", Security{User: "u", Password: "p"}, "queue.nats_url (its user), queue.nats_user: set one way"},
		{"token and creds", "nats://tok@h:4222", Security{Creds: file}, "queue.nats_url (its user), queue.nats_creds: set one way"},
		{"creds and seed", "nats://h:4222", Security{Creds: file, NkeySeed: file}, "queue.nats_creds, queue.nats_nkey_seed: set one way"},
		{"key without cert", "tls://h:4222", Security{TLSKey: file}, "queue.nats_tls_cert: must be set with queue.nats_tls_key"},
		{"cert and key", "tls://h:4222", Security{TLSCert: file, TLSKey: file, TLSCA: file}, ""},
		{"missing CA", "tls://h:4222", Security{TLSCA: filepath.Join(dir, "nope")}, "queue.nats_tls_ca: stat " + filepath.Join(dir, "nope") + ": no such file"},
		{"CA is a directory", "tls://h:4222", Security{TLSCA: dir}, "queue.nats_tls_ca: " + dir + " is a directory"},
		{"missing creds", "nats://h:4222", Security{Creds: filepath.Join(dir, "nope")}, "queue.nats_creds: stat"},
		{"second URL has the user", "nats://h:4222,nats://u:p@g:4222", Security{NkeySeed: file}, "queue.nats_url (its user), queue.nats_nkey_seed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.URL, c.Security, c.DataDir = tc.url, tc.sec, dir
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestConfigNeverShowsThePassword: the config is printed or logged whole
// in places (a test's failure, a debug line); the password must not be.
func TestConfigNeverShowsThePassword(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.Security = Security{User: "levee", Password: redact.Secret("pw-s3cret-7f2a")}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "cfg", c, "sec", c.Security)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "cfg", c, "sec", c.Security)
	for _, shown := range []string{fmt.Sprintf("%v %+v %#v", c, c, c), logged.String()} {
		if strings.Contains(shown, "pw-s3cret-7f2a") {
			t.Errorf("the password shows: %s", shown)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"2.10.14", true}, {"2.10.13", false}, {"2.9.10", false}, {"2.10.0", false},
		{"2.11.0", true}, {"2.15.3", true}, {"3.0.0", true}, {"v2.10.14", true},
		{"2.11.0-RC.1", true}, {"2.10.14-beta", true}, {"1.99.99", false},
		{"2.10", false}, {"", false}, {"garbage", false},
	} {
		if got, _ := versionAtLeast(tc.v, minServer); got != tc.want {
			t.Errorf("versionAtLeast(%q, %s) = %v, want %v", tc.v, MinServerVersion, got, tc.want)
		}
	}
	if fmt.Sprintf("%d.%d.%d", minServer[0], minServer[1], minServer[2]) != MinServerVersion {
		t.Errorf("minServer %v is not MinServerVersion %s", minServer, MinServerVersion)
	}
}

// TestOpenRefusesAnOldServer: a server that says it is 2.9.10 (the version
// whose failure was "max deliver is required to be > length of backoff
// values") is refused at Open, naming its version and the minimum. No old
// nats-server is at hand in a test, so this one speaks just enough of the
// protocol to be connected to: INFO, then PONG to each PING.
func TestOpenRefusesAnOldServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version string
		refused bool
	}{{"2.9.10", true}, {"2.10.7", true}, {"2.10.14", false}} {
		t.Run(tc.version, func(t *testing.T) {
			url := fakeServer(t, tc.version)
			nc, err := Dial(url, Security{}, nats.Timeout(5*time.Second), nats.NoReconnect())
			if !tc.refused {
				if err != nil {
					t.Fatalf("Dial to %s: %v", tc.version, err)
				}
				nc.Close()
				return
			}
			if err == nil {
				nc.Close()
				t.Fatalf("Dial to nats-server %s succeeded, want ErrServerTooOld", tc.version)
			}
			if !errors.Is(err, ErrServerTooOld) || !strings.Contains(err.Error(), `"`+tc.version+`"`) || !strings.Contains(err.Error(), MinServerVersion+" or later") {
				t.Errorf("Dial: %v\nwant ErrServerTooOld naming %s and %s", err, tc.version, MinServerVersion)
			}
			// Open says the same, before it touches a stream.
			cfg := externalConfig(t, url, Security{})
			if _, _, err := openWith(t, cfg); !errors.Is(err, ErrServerTooOld) {
				t.Errorf("Open: %v, want ErrServerTooOld", err)
			}
		})
	}
}

// fakeServer listens on a random port and answers as a NATS server of the
// given version would to a client's connect, and nothing more.
func fakeServer(t *testing.T, version string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() {
				fmt.Fprintf(c, "INFO {\"server_id\":\"FAKE\",\"version\":%q,\"go\":\"go1.19\",\"host\":\"127.0.0.1\",\"port\":4222,\"headers\":true,\"max_payload\":67108864,\"proto\":1,\"jetstream\":true}\r\n", version)
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "PING") {
						fmt.Fprint(c, "PONG\r\n")
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
