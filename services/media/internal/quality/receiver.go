package quality

import (
	"math"
	"sync"
	"time"
)

// RFC 3550 Appendix A.1 source validation parameters.
const (
	// MinSequential is how many packets in sequence a new source must send
	// before it is counted; earlier ones are treated as strays.
	MinSequential = 2
	// MaxDropout is the largest forward jump in sequence number still
	// taken as loss rather than a restart of the stream.
	MaxDropout = 3000
	// MaxMisorder is how far behind the highest sequence number a packet
	// may arrive and still count as late rather than as a restart.
	MaxMisorder = 100
)

const seqMod = 1 << 16

// seenWindow is how many sequence numbers below the highest the receiver
// remembers, to tell a duplicate from a late packet. It covers MaxMisorder.
const seenWindow = 128

// Receiver keeps the receive statistics of one RTP stream (one SSRC). It is
// safe for concurrent use, so the packet path can Update while a reporting
// or metrics goroutine takes a Snapshot.
//
// At a thousand calls a stream's receiver has gone cold in the caches by its
// next packet, 20 ms later, and each line it spans costs the packet a memory
// stall: everything an in-order packet touches sits in the first 64 bytes,
// which Prefetch loads, and the struct is padded to 128 bytes, a size the Go
// allocator places on a 128-byte boundary, so that those bytes are one line.
type Receiver struct {
	mu sync.Mutex

	// Sequence state of RFC 3550 A.1 that every packet updates.
	maxSeq     uint16
	started    bool
	hasTransit bool
	cycles     uint32 // count of wraps, shifted left by 16
	received   uint32
	probation  int32

	// Jitter state of RFC 3550 A.8, in RTP timestamp units. epoch is the
	// arrival (on the process's clock, see clockBase) that maps to RTP-unit
	// 0 for the transit computation.
	clockRate int32
	transit   uint32
	jitterQ4  uint32 // jitter scaled by 16, as the RFC's integer form
	hasEpoch  bool
	epoch     time.Duration

	// seen has bit i set when maxSeq-i has arrived (bit 0 is maxSeq).
	seen [seenWindow / 64]uint64

	// Second line: what only a report, a late packet or a restart reads.
	baseSeq       uint32
	badSeq        uint32
	expectedPrior uint32
	receivedPrior uint32
	duplicates    uint64
	reordered     uint64
	// The call's figures from the sources finished so far (a new SSRC,
	// a restart of the sequence): what RFC 3550 resets per source for
	// the report blocks, a call's quality keeps.
	finishedPackets  uint64
	finishedExpected uint64
	finishedLost     uint64
	_                [8]byte
}

// clockBase is the origin of the receivers' arrival clocks: an arrival is
// kept as its distance from it, 8 bytes where a time.Time takes 24.
var clockBase = time.Now()

// Prefetch reads the receiver's first cache line, for a caller that is about
// to Update it and wants the load started early. The clock rate never
// changes, so reading it needs no lock.
func (r *Receiver) Prefetch() uintptr { return uintptr(r.clockRate) }

// NewReceiver returns statistics for a stream whose RTP clock runs at
// clockRate Hz (8000 for G.711 and G.722, 48000 for Opus).
func NewReceiver(clockRate int) *Receiver {
	return &Receiver{clockRate: int32(min(max(clockRate, 1), math.MaxInt32))}
}

// Update records one received packet. It returns false while the source is
// still on probation or when the packet looks like a stray from a jump in
// sequence numbers, which RFC 3550 says not to count (yet).
func (r *Receiver) Update(seq uint16, rtpTimestamp uint32, arrival time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	valid, duplicate := r.updateSeq(seq)
	if valid && !duplicate {
		r.updateJitter(rtpTimestamp, arrival)
	}
	return valid
}

// UpdateEvent records a packet whose timestamp does not follow its arrival:
// every packet of an RFC 4733 event repeats the event's start timestamp.
// It counts in sequence, loss and duplicates, not in jitter, which it
// would inflate by a frame per packet. The same holds for a packet that
// arrived but is not played, whose timestamp may run on another clock.
func (r *Receiver) UpdateEvent(seq uint16) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	valid, _ := r.updateSeq(seq)
	return valid
}

// NewSource starts over for a stream with a new SSRC, whose sequence
// numbers and timestamps have nothing to do with the last one's: its
// sequence goes on probation as a new source does, and the jitter compares
// transit times within it only. Duplicates, reordering, the jitter
// estimate so far and the call's totals carry on.
func (r *Receiver) NewSource() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finishSource()
	r.started = false
	r.hasTransit = false
}

// updateSeq follows RFC 3550 A.1 update_seq, and also classifies packets
// arriving behind the highest sequence number as duplicates or reordered.
func (r *Receiver) updateSeq(seq uint16) (valid, duplicate bool) {
	if !r.started {
		// A new source: start probation as the RFC's init plus
		// max_seq = seq - 1 does.
		r.started = true
		r.initSeq(seq)
		r.maxSeq = seq - 1
		r.probation = MinSequential
	}
	delta := seq - r.maxSeq // modulo 2^16
	switch {
	case r.probation > 0:
		if seq != r.maxSeq+1 {
			r.probation = MinSequential - 1
			r.maxSeq = seq
			return false, false
		}
		r.probation--
		r.maxSeq = seq
		if r.probation > 0 {
			return false, false
		}
		r.initSeq(seq)
	case delta == 0:
		// Same as the highest: a duplicate the RFC's arithmetic would
		// otherwise treat as in order.
		r.duplicates++
		duplicate = true
	case delta < MaxDropout:
		if seq < r.maxSeq {
			r.cycles += seqMod
		}
		r.markAdvance(delta)
		r.maxSeq = seq
	case uint32(delta) <= seqMod-MaxMisorder:
		// A very large jump: the source restarted, or this is a stray.
		if uint32(seq) != r.badSeq {
			r.badSeq = (uint32(seq) + 1) & (seqMod - 1)
			return false, false
		}
		// Two packets in sequence after the jump: accept the restart.
		r.finishSource()
		r.initSeq(seq)
		r.hasTransit = false
	default:
		// Behind the highest, within MaxMisorder.
		behind := r.maxSeq - seq
		if r.markLate(behind) {
			r.duplicates++
			duplicate = true
		} else {
			r.reordered++
		}
	}
	// As in RFC 3550, every accepted packet counts as received, duplicates
	// included; that is why cumulative loss can go negative.
	r.received++
	return true, duplicate
}

// finishSource adds the figures of the source so far to the call's, before
// its sequence state is started over. A source that never passed probation
// was never counted, and adds nothing. Only a new SSRC or a restart comes
// here, so an in-order packet pays nothing for it.
func (r *Receiver) finishSource() {
	if !r.started || r.probation > 0 {
		return
	}
	expected, lost := r.sourceLoss()
	r.finishedPackets += uint64(r.received)
	r.finishedExpected += uint64(expected)
	r.finishedLost += uint64(max(lost, 0))
}

// initSeq is RFC 3550 A.1 init_seq.
func (r *Receiver) initSeq(seq uint16) {
	r.baseSeq = uint32(seq)
	r.maxSeq = seq
	r.badSeq = seqMod + 1 // so seq == badSeq is false
	r.cycles = 0
	r.received = 0
	r.receivedPrior = 0
	r.expectedPrior = 0
	r.seen = [seenWindow / 64]uint64{1}
}

// markAdvance shifts the seen window forward by delta and marks the new
// highest sequence number.
func (r *Receiver) markAdvance(delta uint16) {
	n := int(delta)
	if n >= seenWindow {
		r.seen = [seenWindow / 64]uint64{1}
		return
	}
	words, shift := n/64, uint(n%64)
	for i := len(r.seen) - 1; i >= 0; i-- {
		var v uint64
		if src := i - words; src >= 0 {
			v = r.seen[src] << shift
			if shift > 0 && src > 0 {
				v |= r.seen[src-1] >> (64 - shift)
			}
		}
		r.seen[i] = v
	}
	r.seen[0] |= 1
}

// markLate marks a packet behind the highest one and reports whether it had
// already been seen.
func (r *Receiver) markLate(behind uint16) bool {
	if int(behind) >= seenWindow {
		return false
	}
	word, bit := behind/64, uint64(1)<<(behind%64)
	seen := r.seen[word]&bit != 0
	r.seen[word] |= bit
	return seen
}

// updateJitter is RFC 3550 A.8: the arrival time is expressed in RTP
// timestamp units, the change in transit time between consecutive packets
// is smoothed with gain 1/16. Arithmetic is modulo 2^32 like RTP
// timestamps, so wraparound needs no special case.
func (r *Receiver) updateJitter(rtpTimestamp uint32, arrival time.Time) {
	if !r.hasEpoch {
		r.epoch, r.hasEpoch = arrival.Sub(clockBase), true
	}
	transit := r.arrivalUnits(arrival) - rtpTimestamp
	if !r.hasTransit {
		r.transit, r.hasTransit = transit, true
		return
	}
	d := int32(transit - r.transit)
	r.transit = transit
	if d < 0 {
		d = -d
	}
	// J += (|D| - J)/16, in the RFC's integer form with J scaled by 16.
	r.jitterQ4 += uint32(d) - ((r.jitterQ4 + 8) >> 4)
}

// arrivalUnits converts arrival into RTP timestamp units since epoch,
// without overflowing for calls of any length.
func (r *Receiver) arrivalUnits(arrival time.Time) uint32 {
	ns := int64(arrival.Sub(clockBase) - r.epoch)
	rate := int64(r.clockRate)
	seconds, rest := ns/int64(time.Second), ns%int64(time.Second)
	return uint32(seconds*rate + rest*rate/int64(time.Second))
}
