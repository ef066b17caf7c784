package engine

import (
	"encoding/binary"
	"time"
)

// eventBlockLen is the size of one RFC 4733 named-event block: event code,
// end bit / volume, 16-bit duration.
const eventBlockLen = 4

// maxEventDuration is the largest duration an RFC 4733 event block holds.
const maxEventDuration = 0xffff

// rescaleEventDurations converts the duration of every event block in an
// RFC 4733 payload from one clock rate to another in place, and returns
// how far to move the packet's timestamp on the destination clock. The
// duration counts timestamp units, so a digit relayed from a
// telephone-event/8000 leg to a telephone-event/48000 leg would otherwise
// play for a sixth of its length. A duration that no longer fits 16 bits
// (a key held 1.4 s at 48 kHz) goes on in a new segment, as RFC 4733
// 2.5.1.3 has a sender do: the timestamp moves on by whole maximum
// durations and the block carries the rest. A payload of several blocks
// (redundant events) cannot be split so and is clamped.
func rescaleEventDurations(payload []byte, from, to int) (tsAdvance uint32) {
	if from == to || from == 0 || to == 0 {
		return 0
	}
	single := len(payload) < 2*eventBlockLen
	for i := 0; i+eventBlockLen <= len(payload); i += eventBlockLen {
		d := int64(binary.BigEndian.Uint16(payload[i+2:])) * int64(to) / int64(from)
		if single && d > maxEventDuration {
			segments := (d - 1) / maxEventDuration
			tsAdvance = uint32(segments * maxEventDuration)
			d -= segments * maxEventDuration
		}
		binary.BigEndian.PutUint16(payload[i+2:], uint16(min(d, maxEventDuration)))
	}
	return tsAdvance
}

// eventEnd is the destination timestamp at which the event in payload, its
// first block, has lasted so far: its timestamp plus its duration.
func eventEnd(ts uint32, payload []byte) uint32 {
	if len(payload) < eventBlockLen {
		return ts
	}
	return ts + uint32(binary.BigEndian.Uint16(payload[2:]))
}

// coverEvent moves the outgoing stream's latest timestamp to the end of an
// event just sent: every packet of an event carries its start, and a stream
// resumed after it (a new source, generated audio) must begin after the
// digit, not inside it. A sender report during a long digit extrapolates
// from there too, not from the digit's start.
func (o *outStream) coverEvent(seq uint16, end uint32) {
	if seq == o.seq && int32(end-o.ts) > 0 {
		o.ts = end
		o.publish()
	}
}

// transcodeEvent carries a telephone-event packet across a transcoding
// direction. Events are never decoded: the packet is renumbered into the
// destination stream, its timestamp mapped onto the destination clock the
// same way the audio is, and its durations rescaled.
func (d *direction) transcodeEvent(r *route, pkt, payload []byte, now time.Time) []byte {
	ts := r.tc.eventTimestamp(d, now)
	ts += rescaleEventDurations(payload, r.inEventClock, r.outEventClock)
	seq := d.out.next(ts, now)
	d.out.coverEvent(seq, eventEnd(ts, payload))
	writeHeaderFields(pkt, r.eventPT, d.hdr.marker, seq, ts, d.out.ssrc)
	return pkt
}
