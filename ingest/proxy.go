package ingest

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyHeaderTimeout bounds the wait for a trusted peer's PROXY header. A
// load balancer sends it with the connection; one that has not within this
// long is not speaking the protocol. A variable for the tests.
var proxyHeaderTimeout = 5 * time.Second

// proxySources are the peers whose PROXY protocol header (v1 or v2) is
// believed: the load balancers in front of Levee (smtp.proxy_protocol_from).
// A connection from one of them must start with a header (HAProxy's and
// Kubernetes load balancers' "send-proxy"); from anyone else a header is
// just a bad command, so a client cannot claim another's address.
type proxySources []netip.Prefix

func (p proxySources) trusts(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, pre := range p {
		if pre.Contains(ip) {
			return true
		}
	}
	return false
}

// parseProxySources reads smtp.proxy_protocol_from: CIDRs or single addresses.
func parseProxySources(list []string) (proxySources, error) {
	var out proxySources
	for _, s := range list {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// acceptProxied is the listener's accept loop when some peers speak the
// PROXY protocol: their header is read on a goroutine of its own, so that a
// peer slow to send it holds up no other connection, and the connection is
// admitted (limits, per-IP caps) by the client address it names.
func (l *listener) acceptProxied() {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors, say: go-smtp would wait and
				// call Accept again, so this loop must live on too.
				l.srv.log.Warn("smtp accept failed; retrying", "err", err)
				select {
				case <-time.After(acceptRetry):
					continue
				case <-l.closed:
					return
				}
			}
			select {
			case l.ready <- accepted{err: err}:
			case <-l.closed:
			}
			return
		}
		if !l.srv.proxies.trusts(nc.RemoteAddr()) {
			l.admitAndHandOver(nc)
			continue
		}
		go func() {
			pc := proxyproto.NewConn(nc, proxyproto.SetReadHeaderTimeout(l.headerTimeout))
			pc.ProxyHeaderPolicy = proxyproto.REQUIRE
			// RemoteAddr reads the header; ProxyHeader is nil if it was
			// missing or malformed.
			_ = pc.RemoteAddr()
			if pc.ProxyHeader() == nil {
				l.srv.log.Warn("smtp connection from a PROXY protocol peer without a valid header: closed", "peer", nc.RemoteAddr().String())
				_ = nc.Close()
				return
			}
			l.admitAndHandOver(pc)
		}()
	}
}

// accepted is one outcome of the proxied accept loop.
type accepted struct {
	conn net.Conn
	err  error
}

func (l *listener) admitAndHandOver(nc net.Conn) {
	c := l.srv.admit(nc)
	if c == nil {
		return
	}
	select {
	case l.ready <- accepted{conn: c}:
	case <-l.closed:
		_ = c.Close()
	}
}

// acceptRetry is the pause after a temporary accept error.
const acceptRetry = 100 * time.Millisecond

// isTemporary reports the accept errors a server waits out: the process or
// the system out of file descriptors, or memory for a socket.
func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED)
}
