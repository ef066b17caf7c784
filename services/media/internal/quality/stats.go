package quality

// Stats is a receiver report for one stream, in the terms of RFC 3550.
type Stats struct {
	// Packets is the number of packets received and counted, duplicates
	// included (RFC 3550 "received").
	Packets uint64
	// Expected is how many packets the sequence numbers say were sent
	// since the first valid one.
	Expected uint64
	// Lost is Expected - Packets, clamped at 0 (duplicates can make the
	// RFC's signed value negative).
	Lost uint64
	// CumulativeLost is the RFC's signed value limited to 24 bits, as an
	// RTCP receiver report carries it.
	CumulativeLost int32
	// Duplicates counts packets whose sequence number had already arrived.
	Duplicates uint64
	// Reordered counts packets that arrived after a higher sequence number.
	Reordered uint64
	// ExtendedHighestSeq is the highest sequence number with the count of
	// wraparounds in the upper 16 bits.
	ExtendedHighestSeq uint32
	// FractionLost is the share of packets lost since the previous
	// Snapshot, 0 to 1.
	FractionLost float64
	// FractionLostQ8 is FractionLost as the RTCP 8-bit fixed point field.
	FractionLostQ8 uint8
	// Jitter is the interarrival jitter in RTP timestamp units.
	Jitter uint32
	// JitterMs is Jitter in milliseconds.
	JitterMs float64
	// Valid is false until the source has passed probation.
	Valid bool

	// Packets, Expected and Lost above start over with each source (a
	// new SSRC, a restart of its sequence numbers), as a report block's
	// must. The call's quality is that of every source it had: these
	// sum them, the current one included once past probation.
	// CallExpected is nonzero once any source has passed probation.
	CallPackets  uint64
	CallExpected uint64
	CallLost     uint64
}

// LossPercent returns the current source's cumulative loss as a
// percentage of its expected packets.
func (s Stats) LossPercent() float64 {
	return 100 * LossRatio(s.Lost, s.Expected)
}

// LossRatio is the share of the packets expected that did not arrive, 0
// when none were expected. Expected is RFC 3550 6.4.1's (the extended
// highest sequence number received less the first counted, plus one), not
// the packets received plus the lost: packets a source sent on probation
// or before the jump of a restart were never expected, and counting them
// in would understate the loss. A stream's loss ratio and the loss MOS
// rates it with (times 100) are this one figure, so the two agree.
func LossRatio(lost, expected uint64) float64 {
	if expected == 0 {
		return 0
	}
	return float64(lost) / float64(expected)
}

// Snapshot returns the statistics and starts a new reporting interval:
// FractionLost covers the packets since the previous Snapshot, as an RTCP
// receiver report does. Use Current to look without starting an interval.
func (r *Receiver) Snapshot() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats()
	r.expectedPrior = uint32(s.Expected)
	r.receivedPrior = r.received
	return s
}

// Current returns the statistics without starting a new reporting interval.
func (r *Receiver) Current() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats()
}

// RTCP's cumulative loss field is a signed 24-bit integer.
const (
	maxCumulativeLost = 0x7FFFFF
	minCumulativeLost = -0x800000
)

// stats is RFC 3550 A.3; the caller holds the lock.
func (r *Receiver) stats() Stats {
	s := Stats{
		Duplicates:   r.duplicates,
		Reordered:    r.reordered,
		Jitter:       r.jitterQ4 >> 4,
		JitterMs:     float64(r.jitterQ4) / 16 * 1000 / float64(r.clockRate),
		Valid:        r.started && r.probation == 0,
		CallPackets:  r.finishedPackets,
		CallExpected: r.finishedExpected,
		CallLost:     r.finishedLost,
	}
	if !s.Valid {
		return s
	}
	expected, lost := r.sourceLoss()
	s.ExtendedHighestSeq = r.cycles + uint32(r.maxSeq)
	s.Expected = uint64(expected)
	s.Packets = uint64(r.received)
	s.CumulativeLost = int32(max(minCumulativeLost, min(maxCumulativeLost, lost)))
	s.Lost = uint64(max(lost, 0))
	s.CallPackets += s.Packets
	s.CallExpected += s.Expected
	s.CallLost += s.Lost

	expectedInterval := expected - r.expectedPrior
	receivedInterval := r.received - r.receivedPrior
	lostInterval := int64(expectedInterval) - int64(receivedInterval)
	if expectedInterval != 0 && lostInterval > 0 {
		s.FractionLostQ8 = uint8(min(255, (lostInterval<<8)/int64(expectedInterval)))
		s.FractionLost = float64(lostInterval) / float64(expectedInterval)
	}
	return s
}

// sourceLoss is how many packets the current source's sequence numbers say
// were sent, and how many of those did not arrive: RFC 3550 A.3's signed
// cumulative loss, negative when duplicates outnumber the lost. The caller
// holds the lock, and the source has passed probation.
func (r *Receiver) sourceLoss() (expected uint32, lost int64) {
	expected = r.cycles + uint32(r.maxSeq) - r.baseSeq + 1
	return expected, int64(expected) - int64(r.received)
}
