// Package portpool hands out RTP/RTCP port pairs from a fixed UDP port range.
//
// A pair is an even RTP port with RTCP on the next odd port (RFC 3550 §11).
// The pool binds both sockets before handing a pair out, so a pair is only
// ever returned when the operating system actually gave us the ports: a port
// held by another process is skipped, not reported as ours.
package portpool

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"callgrid.dev/services/media/internal/udpio"
)

// ErrExhausted is returned by Allocate when every pair in the range is in use
// or refused by the operating system.
var ErrExhausted = errors.New("rtp port range exhausted")

// ErrBadRange is returned by New when the range holds no even/odd pair.
var ErrBadRange = errors.New("rtp port range holds no port pair")

// Pool allocates port pairs from [min, max]. It is safe for concurrent use.
type Pool struct {
	bindIP netip.Addr
	first  int // lowest even RTP port in the range
	pairs  int // number of pairs in the range

	mu     sync.Mutex
	inUse  []bool // indexed by pair number
	used   int
	cursor int // next pair number to try
}

// New returns a pool over the even RTP ports in [min, max] whose RTCP port
// (+1) is also within the range, binding on bindIP.
func New(bindIP string, min, max int) (*Pool, error) {
	ip, err := netip.ParseAddr(bindIP)
	if err != nil {
		return nil, fmt.Errorf("parse bind address %q: %w", bindIP, err)
	}
	if min < 1 || max > 65535 || min > max {
		return nil, fmt.Errorf("range %d-%d: %w", min, max, ErrBadRange)
	}
	first := min + min%2
	pairs := 0
	if max >= first+1 {
		pairs = (max-first-1)/2 + 1
	}
	if pairs == 0 {
		return nil, fmt.Errorf("range %d-%d: %w", min, max, ErrBadRange)
	}
	return &Pool{bindIP: ip.Unmap(), first: first, pairs: pairs, inUse: make([]bool, pairs)}, nil
}

// Allocate binds and returns the next free pair. It walks the range
// round-robin from where the previous allocation stopped, so a pair released
// a moment ago is the last to be reused: late packets meant for the old call
// then find no socket instead of leaking into a new one.
func (p *Pool) Allocate() (*Pair, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range p.pairs {
		n := p.cursor
		p.cursor = (p.cursor + 1) % p.pairs
		if p.inUse[n] {
			continue
		}
		pair, err := p.bind(p.first + 2*n)
		if err != nil {
			// Taken by someone outside the pool (or refused); try the next.
			continue
		}
		p.inUse[n] = true
		p.used++
		pair.pool = p
		pair.index = n
		return pair, nil
	}
	return nil, ErrExhausted
}

func (p *Pool) bind(rtpPort int) (*Pair, error) {
	rtp, err := udpio.Listen(netip.AddrPortFrom(p.bindIP, uint16(rtpPort)))
	if err != nil {
		return nil, err
	}
	rtcp, err := udpio.Listen(netip.AddrPortFrom(p.bindIP, uint16(rtpPort+1)))
	if err != nil {
		rtp.Close()
		return nil, err
	}
	return &Pair{RTP: rtp, RTCP: rtcp, Port: rtpPort}, nil
}

func (p *Pool) release(index int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse[index] {
		p.inUse[index] = false
		p.used--
	}
}

// InUse reports how many pairs are allocated.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// Total reports how many pairs the range holds.
func (p *Pool) Total() int { return p.pairs }
