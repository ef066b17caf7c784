package sipproxy

import (
	"net/netip"
	"sync"
	"time"
)

// rateLimiter is a per-source-IP token bucket in the spirit of Kamailio's
// pike module: a source that overflows its bucket is banned for a while and
// everything it sends is dropped before parsing.
type rateLimiter struct {
	rate       float64
	burst      float64
	banTime    time.Duration
	maxSources int
	now        func() time.Time

	mu      sync.Mutex
	sources map[netip.Addr]*bucket
}

type bucket struct {
	tokens      float64
	last        time.Time
	bannedUntil time.Time
}

func newRateLimiter(cfg RateLimitConfig, now func() time.Time) *rateLimiter {
	return &rateLimiter{
		rate:       cfg.RequestsPerSecond,
		burst:      float64(cfg.Burst),
		banTime:    cfg.BanTime,
		maxSources: cfg.MaxSources,
		now:        now,
		sources:    make(map[netip.Addr]*bucket),
	}
}

// allow spends one token for ip and reports whether the message may pass.
func (l *rateLimiter) allow(ip netip.Addr) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.sources[ip]
	if b == nil {
		if len(l.sources) >= l.maxSources {
			l.sweepLocked(now)
			if len(l.sources) >= l.maxSources {
				// Table full of active sources: refuse newcomers rather than grow
				// without bound; established sources keep their buckets.
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.sources[ip] = b
	}
	if now.Before(b.bannedUntil) {
		return false
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		b.bannedUntil = now.Add(l.banTime)
		return false
	}
	b.tokens--
	return true
}

// sweep forgets sources whose bucket is full again and who are not banned.
func (l *rateLimiter) sweep() {
	now := l.now()
	l.mu.Lock()
	l.sweepLocked(now)
	l.mu.Unlock()
}

func (l *rateLimiter) sweepLocked(now time.Time) {
	for ip, b := range l.sources {
		refilled := b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst
		if refilled && !now.Before(b.bannedUntil) {
			delete(l.sources, ip)
		}
	}
}
