package engine

import (
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
	"time"
)

// frameDuration is the packet interval of generated media, and the least a
// resumed stream's timestamp advances.
const frameDuration = 20 * time.Millisecond

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
	shared      *atomic.Uint32 // ssrc, for the RTCP reporter on another goroutine
	seq         uint16         // highest sent
	ts          uint32         // timestamp of the highest sent
	at          time.Time

	// Relay mapping from the current source.
	inSSRC   uint32
	seqDelta uint16
	tsDelta  uint32
	rebase   bool // next relayed packet starts a new mapping
}

func newOutStream(transparent bool) outStream {
	var b [10]byte
	_, _ = rand.Read(b[:])
	o := outStream{
		transparent: transparent,
		ssrc:        binary.BigEndian.Uint32(b[0:]),
		shared:      new(atomic.Uint32),
		seq:         binary.BigEndian.Uint16(b[4:]),
		ts:          binary.BigEndian.Uint32(b[6:]),
	}
	o.shared.Store(o.ssrc)
	return o
}

// relay maps a relayed packet's numbering onto the stream. marker is true
// for the first packet after the source changed, which starts a talkspurt
// for the receiver.
func (o *outStream) relay(ssrc uint32, seq uint16, ts uint32, clock int, now time.Time) (outSeq uint16, outTS uint32, marker bool) {
	if !o.started || ssrc != o.inSSRC || o.rebase {
		switch {
		case !o.started && o.transparent:
			o.ssrc, o.seqDelta, o.tsDelta = ssrc, 0, 0
			o.shared.Store(ssrc)
		case !o.started:
			o.seqDelta, o.tsDelta = o.seq-seq, o.ts-ts
		default:
			o.seqDelta = o.seq + 1 - seq
			o.tsDelta = o.resumeTS(clock, now) - ts
			marker = true
		}
		o.inSSRC, o.rebase = ssrc, false
		outSeq, outTS = seq+o.seqDelta, ts+o.tsDelta
		o.started, o.seq, o.ts, o.at = true, outSeq, outTS, now
		return outSeq, outTS, marker
	}
	outSeq, outTS = seq+o.seqDelta, ts+o.tsDelta
	// Late (reordered) packets keep their place; only newer ones move the
	// stream's high-water mark.
	if int16(outSeq-o.seq) > 0 {
		o.seq, o.ts, o.at = outSeq, outTS, now
	}
	return outSeq, outTS, false
}

// next numbers a generated packet with timestamp ts.
func (o *outStream) next(ts uint32, now time.Time) uint16 {
	o.started = true
	o.seq++
	o.ts, o.at = ts, now
	// A relayed source that comes back later must be mapped afresh.
	o.rebase = true
	return o.seq
}

// resumeTS is the timestamp that continues the stream now: the last one
// plus the time since it was sent, at least one frame, in clock ticks.
func (o *outStream) resumeTS(clock int, now time.Time) uint32 {
	if !o.started {
		return o.ts
	}
	gap := max(now.Sub(o.at), frameDuration)
	return o.ts + uint32(int64(gap)*int64(clock)/int64(time.Second))
}
