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
	"syscall"

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

	mu    sync.Mutex
	inUse []bool // indexed by pair number
	used  int
	// free is a ring of the pair numbers not in use, in the order they are
	// to be tried: the longest free at head, a released one at the back.
	free  []int
	head  int
	nfree int
}

// New returns a pool over the even RTP ports in [min, max] whose RTCP port
// (+1) is also within the range, binding on bindIP.
func New(bindIP string, min, max int) (*Pool, error) {
	ip, err := netip.ParseAddr(bindIP)
	if err != nil {
		return nil, fmt.Errorf("parse bind address %q: %w", bindIP, err)
	}
	pairs := Pairs(min, max)
	if pairs == 0 {
		return nil, fmt.Errorf("range %d-%d: %w", min, max, ErrBadRange)
	}
	first := min + min%2
	p := &Pool{bindIP: ip.Unmap(), first: first, pairs: pairs, inUse: make([]bool, pairs), free: make([]int, pairs)}
	for n := range pairs {
		p.pushFree(n)
	}
	return p, nil
}

// Pairs is the number of port pairs a pool over [min, max] holds: 0 for a
// range that is not within 1-65535.
func Pairs(min, max int) int {
	if min < 1 || max > 65535 || min > max {
		return 0
	}
	first := min + min%2
	if max < first+1 {
		return 0
	}
	return (max-first-1)/2 + 1
}

// Allocate binds and returns the pair that has been free the longest, so a
// pair released a moment ago is the last to be reused: late packets meant
// for the old call then find no socket instead of leaking into a new one.
// Only a range with no other pair free hands it out again at once.
//
// A pair that another process holds is skipped and tried again on a later
// call. A bind that fails for a reason no other port would change (the
// address is not the host's, no descriptors are left) ends the call with
// that error, still ErrExhausted for callers.
func (p *Pool) Allocate() (*Pair, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range p.nfree {
		n := p.popFree()
		pair, err := p.bind(p.first + 2*n)
		if err != nil {
			// To the back, so the pairs not tried yet go first: one held
			// elsewhere is only ever skipped, never lost to the pool.
			p.pushFree(n)
			if hostWide(err) {
				return nil, fmt.Errorf("%w: %w", ErrExhausted, err)
			}
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

func (p *Pool) popFree() int {
	n := p.free[p.head]
	p.head = (p.head + 1) % p.pairs
	p.nfree--
	return n
}

func (p *Pool) pushFree(n int) {
	p.free[(p.head+p.nfree)%p.pairs] = n
	p.nfree++
}

// hostWide reports whether a bind failed for a reason that is not about
// its port, so that every other pair would fail the same way. An error it
// does not know counts as the port's: trying the other pairs costs a scan,
// while giving up early would refuse a call that another pair could take.
func hostWide(err error) bool {
	for _, errno := range [...]syscall.Errno{syscall.EADDRNOTAVAIL, syscall.EAFNOSUPPORT, syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
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
		p.pushFree(index)
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
