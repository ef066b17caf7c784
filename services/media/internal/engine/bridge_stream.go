package engine

import (
	"crypto/rand"
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// frameDuration is the packet interval of generated media, and how long a
// relayed packet, whose length the node does not know, is taken to last.
const frameDuration = 20 * time.Millisecond

// spanUnknown is outStream.spanMs for a relayed packet.
const spanUnknown = math.MaxUint16

// outStream is the RTP stream this node sends to one endpoint. Whatever
// feeds it (a relayed source that changes SSRC after a re-INVITE, a
// transcoder, a tone) the endpoint sees one SSRC with sequence numbers and
// timestamps that continue across the change, so its jitter buffer does not
// reset or discard the new audio as late. It is owned by the one goroutine
// that feeds it.
type outStream struct {
	// transparent streams take SSRC, sequence and timestamp from the first
	// relayed source unchanged, so a plain relay is invisible.
	transparent bool
	started     bool
	ssrc        uint32
	report      *streamReport // for the RTCP reporter on another goroutine
	seq         uint16        // highest sent
	// spanMs is how long the newest packet lasts, in ms: a stream
	// resumed after it starts no sooner than its end. It is 0 for an
	// event packet (the stream's timestamp is moved to the event's end,
	// coverEvent), and spanUnknown for a relayed one, whose length the
	// node does not know.
	spanMs uint16
	ts     uint32 // timestamp of the highest sent
	at     time.Time

	// Relay mapping from the current source.
	inSSRC   uint32
	seqDelta uint16
	tsDelta  uint32
	rebase   bool // next relayed packet starts a new mapping

	// The mapping's last move for event segment ends the node inserted
	// (rewriteEvent): from source sequence number shiftFrom on it numbers
	// shiftBy further on, so the shiftSpan packets before shiftFrom, should
	// they come late, keep the numbers they had before it. Older ones are
	// not sent: the moves before are not kept, and the mapping now would
	// give them numbers already sent. shiftBy is 0 for none.
	shiftFrom, shiftBy, shiftSpan uint16
}

func newOutStream(transparent bool) outStream {
	var b [10]byte
	_, _ = rand.Read(b[:])
	ssrc := binary.BigEndian.Uint32(b[0:])
	return outStream{
		transparent: transparent,
		ssrc:        ssrc,
		report:      newStreamReport(ssrc),
		seq:         binary.BigEndian.Uint16(b[4:]),
		ts:          binary.BigEndian.Uint32(b[6:]),
	}
}

// renewSSRC gives the stream a new random SSRC, other than the one it had,
// and returns the one it replaces. sent is what the leg the stream goes to
// had been sent until now, all of it under the old SSRC. Its numbering
// goes on: the receiver takes it for a new source either way.
func (o *outStream) renewSSRC(sent sendCounts) uint32 {
	old := o.ssrc
	for o.ssrc == old {
		o.ssrc = randomSSRC()
	}
	o.report.takeOver(o.ssrc, sent)
	return old
}

// randomSSRC draws an SSRC as RFC 3550 §8.1 has it: at random, so that two
// parties rarely pick the same one.
func randomSSRC() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// streamReport is what the session clock, which sends RTCP, reads of a
// stream fed on another goroutine.
type streamReport struct {
	// mu holds the stream's SSRC together with what its leg had been sent
	// before that SSRC took over, so that a sender report counts what was
	// sent under its own SSRC alone (RFC 3550 §6.4.1), even when it is
	// made as the feeder renumbers the stream.
	mu     sync.Mutex
	ssrc   uint32
	before sendCounts
	// last is the timestamp of the newest packet sent (high 32 bits) and
	// when it was sent, in microseconds of the activity clock modulo 2^32
	// (low 32 bits). One word, so that a sender report never pairs one
	// packet's timestamp with another's send time; the 71 minutes the
	// modulus spans are far more than a report looks back.
	last atomic.Uint64
}

// sendCounts is what a leg was sent: RTP packets, and their payload
// octets as a sender report counts them.
type sendCounts struct {
	packets, octets uint64
}

// minus is what was sent since before.
func (c sendCounts) minus(before sendCounts) sendCounts {
	return sendCounts{packets: c.packets - before.packets, octets: c.octets - before.octets}
}

func newStreamReport(ssrc uint32) *streamReport {
	return &streamReport{ssrc: ssrc}
}

// takeOver makes ssrc the stream's, after what its leg was sent before.
func (r *streamReport) takeOver(ssrc uint32, before sendCounts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ssrc, r.before = ssrc, before
}

// sentUnder returns the stream's SSRC and what l, the leg it goes to, has
// been sent under it.
func (r *streamReport) sentUnder(l *leg) (uint32, sendCounts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ssrc, l.sent().minus(r.before)
}

// publish makes the stream's newest timestamp and its send time the ones
// its sender reports extrapolate from.
func (o *outStream) publish() {
	o.report.last.Store(uint64(o.ts)<<32 | uint64(uint32(stampOf(o.at)/time.Microsecond)))
}

// rtpTime is the stream's RTP timestamp at now on a clock of clock Hz:
// the newest one sent, moved on by the time since it was sent, as RFC 3550
// §6.4.1 has a sender report relate its RTP and NTP timestamps.
func (r *streamReport) rtpTime(now time.Time, clock int) uint32 {
	last := r.last.Load()
	since := time.Duration(int32(uint32(stampOf(now)/time.Microsecond)-uint32(last))) * time.Microsecond
	return uint32(last>>32) + uint32(int64(since)*int64(clock)/int64(time.Second))
}

// relay maps a relayed packet's numbering onto the stream. marker is true
// for the first packet after the source changed, which starts a talkspurt
// for the receiver. ok is false for a late packet from before the moves
// of the mapping the stream keeps (shift): it is not to be sent.
func (o *outStream) relay(ssrc uint32, seq uint16, ts uint32, clock int, now time.Time) (outSeq uint16, outTS uint32, marker, ok bool) {
	if !o.started || ssrc != o.inSSRC || o.rebase {
		switch {
		case !o.started && o.transparent:
			o.ssrc, o.seqDelta, o.tsDelta = ssrc, 0, 0
			// Nothing was sent before the stream started: it alone
			// feeds its leg.
			o.report.takeOver(ssrc, sendCounts{})
		case !o.started:
			o.seqDelta, o.tsDelta = o.seq-seq, o.ts-ts
		default:
			o.seqDelta = o.seq + 1 - seq
			o.tsDelta = o.resumeTS(clock, now) - ts
			marker = true
		}
		o.inSSRC, o.rebase, o.spanMs, o.shiftBy = ssrc, false, spanUnknown, 0
		outSeq, outTS = seq+o.seqDelta, ts+o.tsDelta
		o.started, o.seq, o.ts, o.at = true, outSeq, outTS, now
		o.publishRelayed()
		return outSeq, outTS, marker, true
	}
	outSeq, outTS = seq+o.seqDelta, ts+o.tsDelta
	// Late (reordered) packets keep their place; only newer ones move the
	// stream's high-water mark.
	if int16(outSeq-o.seq) > 0 {
		o.seq, o.ts, o.at = outSeq, outTS, now
		o.publishRelayed()
		return outSeq, outTS, false, true
	}
	if behind := o.shiftFrom - seq; o.shiftBy != 0 && int16(behind) > 0 {
		if behind > o.shiftSpan {
			return 0, 0, false, false
		}
		outSeq -= o.shiftBy
	}
	return outSeq, outTS, false, true
}

// shift moves the mapping by n numbers from source sequence number from
// on, the newest relayed, for packets the node inserts after that one's.
func (o *outStream) shift(from, n uint16) {
	span := uint16(math.MaxUint16)
	if o.shiftBy != 0 {
		span = from - o.shiftFrom
	}
	o.shiftFrom, o.shiftBy, o.shiftSpan = from, n, span
	o.seqDelta += n
	o.seq += n
}

// publishRelayed publishes a relayed packet's numbering when this node is
// the stream's sender (echo). A transparent relay's sender reports come
// from its source, so the bridge's packet path does not pay for it.
func (o *outStream) publishRelayed() {
	if !o.transparent {
		o.publish()
	}
}

// next numbers a generated packet with timestamp ts, lasting span (0 for
// an event packet, which says where the event starts).
func (o *outStream) next(ts uint32, now time.Time, span time.Duration) uint16 {
	o.started = true
	o.seq++
	o.ts, o.at = ts, now
	o.spanMs = uint16(span / time.Millisecond)
	o.publish()
	// A relayed source that comes back later must be mapped afresh.
	o.rebase = true
	return o.seq
}

// resumeTS is the timestamp that continues the stream now: the last one
// plus the time since it was sent, and at least that packet's length (a
// 10 ms packet ends 10 ms on, a 60 ms one 60 ms on), in clock ticks: a
// stream resumed at once after a 10 ms packet follows it seamlessly. A
// relayed packet's length is not known (it could be read from the
// payload, at a cost to every relayed packet for the rare new source), so
// it is taken to last a frame, the packet time most endpoints send; a
// new source's first packet comes a packet time after the old source's
// last anyway, which the time since covers.
func (o *outStream) resumeTS(clock int, now time.Time) uint32 {
	if !o.started {
		return o.ts
	}
	span := time.Duration(o.spanMs) * time.Millisecond
	if o.spanMs == spanUnknown {
		span = frameDuration
	}
	gap := max(now.Sub(o.at), span)
	return o.ts + uint32(int64(gap)*int64(clock)/int64(time.Second))
}
