package engine

import (
	"runtime"
	"sync/atomic"
	"time"
)

// srRecord is the endpoint's last sender report, as the reports this node
// sends need it (LSR and DLSR, RFC 3550 §6.4.1). The session's event loop
// writes it on every SR, the session clock reads it once a report. The
// SR and its arrival make one pair that no single atomic word holds (an
// SSRC, an LSR and a stamp), so a seqlock keeps them together: no lock,
// and no allocation on either side. Two separate words did not: an SR
// arriving between their reads paired its LSR with the one before's
// arrival, and the endpoint took the report's DLSR, and the round trip it
// works out from it, seconds too long.
type srRecord struct {
	// seq counts the writes begun and the writes finished: it is odd
	// while one is under way.
	seq atomic.Uint32
	// sr is the SR's sender SSRC (high 32 bits) and the middle 32 bits
	// of its NTP time (low 32 bits): a report block's LSR must come
	// from its own source's SR. Any value is an SR's (SSRC 0 with
	// middle bits 0 too), so at says whether there is one: the SR's
	// srStamp, never 0, and 0 while none arrived.
	sr atomic.Uint64
	at atomic.Int64
	// afterRead, for tests only, runs between reading the pair and
	// checking that no write went by meanwhile.
	afterRead func()
}

// store records an SR from sender ssrc whose NTP time's middle 32 bits are
// lsr, which arrived at activity stamp at (srStamp; 0 forgets the SR).
func (r *srRecord) store(ssrc, lsr uint32, at time.Duration) {
	// One writer at a time makes the count odd. Only the event loop
	// writes, but the compare-and-swap costs an SR no more than an add
	// would, and keeps the record sound were there ever two.
	s := r.seq.Load()
	for s&1 != 0 || !r.seq.CompareAndSwap(s, s+1) {
		runtime.Gosched()
		s = r.seq.Load()
	}
	r.sr.Store(uint64(ssrc)<<32 | uint64(lsr))
	r.at.Store(int64(at))
	r.seq.Store(s + 2)
}

// load returns the last SR recorded, its fields all of the same SR; ok is
// false while none was.
func (r *srRecord) load() (ssrc, lsr uint32, at time.Duration, ok bool) {
	for {
		// Go's atomics are sequentially consistent: the pair is read
		// after the first count and before the second, so the same
		// even count both times means no write touched it between.
		s := r.seq.Load()
		if s&1 == 0 {
			sr, a := r.sr.Load(), r.at.Load()
			if r.afterRead != nil {
				r.afterRead()
			}
			if r.seq.Load() == s {
				return uint32(sr >> 32), uint32(sr), time.Duration(a), a != 0
			}
		}
		// A write is under way or just went by: two stores, and the
		// next try reads what it wrote.
		runtime.Gosched()
	}
}
