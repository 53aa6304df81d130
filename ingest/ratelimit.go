package ingest

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// clientRates limits the messages a client may start a minute, by its
// address and by its network, so that one sender (or one botnet's /24)
// cannot take the whole receiver (Postfix: smtpd_client_message_rate_limit).
// A client over either limit gets 451 4.7.1 at MAIL and comes back later.
// An IPv6 client is counted by its /64 (what one host or customer gets) and
// its network by the /48.
type clientRates struct {
	perClient, perNetwork rate.Limit // messages a second; 0: no limit
	burstClient, burstNet int

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// rateScope names which limit refused a message.
type rateScope string

const (
	rateAllowed       rateScope = ""
	rateClientLimited rateScope = "client"
	rateNetLimited    rateScope = "network"
)

// idleBucket is how long a client's bucket is kept after its last message:
// by then it has refilled, so forgetting it changes nothing.
const idleBucket = 10 * time.Minute

func newClientRates(perClientPerMinute, perNetworkPerMinute int) *clientRates {
	return &clientRates{
		perClient: rate.Limit(float64(perClientPerMinute) / 60), burstClient: perClientPerMinute,
		perNetwork: rate.Limit(float64(perNetworkPerMinute) / 60), burstNet: perNetworkPerMinute,
		buckets: map[netip.Prefix]*bucket{},
	}
}

// allow takes one message from the client's and its network's allowance,
// or says which is spent (taking from neither).
func (r *clientRates) allow(ip string, now time.Time) rateScope {
	if r.perClient == 0 && r.perNetwork == 0 {
		return rateAllowed
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return rateAllowed // a pipe in tests: no address to count
	}
	a = a.Unmap()
	clientBits, netBits := 32, 24
	if a.Is6() {
		clientBits, netBits = 64, 48
	}
	client, _ := a.Prefix(clientBits)
	network, _ := a.Prefix(netBits)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweep(now)
	var c, n *rate.Limiter
	if r.perClient > 0 {
		c = r.bucketFor(client, r.perClient, r.burstClient, now)
		if c.TokensAt(now) < 1 {
			return rateClientLimited
		}
	}
	if r.perNetwork > 0 {
		n = r.bucketFor(network, r.perNetwork, r.burstNet, now)
		if n.TokensAt(now) < 1 {
			return rateNetLimited
		}
	}
	if c != nil {
		c.AllowN(now, 1)
	}
	if n != nil {
		n.AllowN(now, 1)
	}
	return rateAllowed
}

func (r *clientRates) bucketFor(key netip.Prefix, lim rate.Limit, burst int, now time.Time) *rate.Limiter {
	// The client and network keys never collide: their prefix lengths differ.
	b := r.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(lim, burst)}
		r.buckets[key] = b
	}
	b.seen = now
	return b.lim
}

// sweep forgets idle buckets, at most once a minute: memory stays bounded
// by the clients of the last few minutes.
func (r *clientRates) sweep(now time.Time) {
	if now.Sub(r.swept) < time.Minute {
		return
	}
	r.swept = now
	for k, b := range r.buckets {
		if now.Sub(b.seen) > idleBucket {
			delete(r.buckets, k)
		}
	}
}
