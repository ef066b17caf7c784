package engine

import (
	"encoding/binary"
	"time"
)

// eventBlockLen is the size of one RFC 4733 named-event block: event code,
// end bit / volume, 16-bit duration.
const eventBlockLen = 4

// rescaleEventDurations converts the duration of every event block in an
// RFC 4733 payload from one clock rate to another in place. The duration
// counts timestamp units, so a digit relayed from a telephone-event/8000
// leg to a telephone-event/48000 leg would otherwise play for a sixth of its
// length.
func rescaleEventDurations(payload []byte, from, to int) {
	if from == to || from == 0 || to == 0 {
		return
	}
	for i := 0; i+eventBlockLen <= len(payload); i += eventBlockLen {
		d := int64(binary.BigEndian.Uint16(payload[i+2:])) * int64(to) / int64(from)
		binary.BigEndian.PutUint16(payload[i+2:], uint16(min(d, 0xffff)))
	}
}

// transcodeEvent carries a telephone-event packet across a transcoding
// direction. Events are never decoded: the packet is renumbered into the
// destination stream, its timestamp mapped onto the destination clock the
// same way the audio is, and its durations rescaled.
func (d *direction) transcodeEvent(r *route, pkt, payload []byte, now time.Time) []byte {
	ts := r.tc.eventTimestamp(d, now)
	rescaleEventDurations(payload, r.inEventClock, r.outEventClock)
	seq := d.out.next(ts, now)
	writeHeaderFields(pkt, r.eventPT, d.hdr.marker, seq, ts, d.out.ssrc)
	return pkt
}
