package engine

import (
	"encoding/binary"
	"time"
)

const (
	// eventBlockLen is the size of one RFC 4733 named-event block: event
	// code, end bit / volume, 16-bit duration.
	eventBlockLen = 4
	// maxEventDuration is the largest duration an RFC 4733 event block
	// holds, and so the length of every segment of a long event but its
	// last.
	maxEventDuration = 0xffff
	// eventEndBit is the E bit, in an event block's second byte.
	eventEndBit = 0x80
)

// eventTrack follows the RFC 4733 event a direction carries from one
// telephone-event clock to another. A duration counts ticks of its clock,
// so the same key press fills the 16-bit field after 8.2 s at 8 kHz but
// 1.4 s at 48 kHz. RFC 4733 §2.5.1.3 has a longer event sent in segments:
// each but the last ends with a packet of duration 0xFFFF, the next starts
// with the timestamp 0xFFFF ticks later and counts its duration from there,
// and only the last carries the end bit. Where a source splits an event
// is no place to split it on another clock, so the track puts the event's
// length back together from the source's segments and lays out segments
// of the destination clock's own. It is owned by the direction's reader.
type eventTrack struct {
	srcStart  uint32 // source timestamp of the event's first segment
	srcLatest uint32 // the newest source segment seen, in ticks after srcStart
	dstStart  uint32 // destination timestamp of the event's first segment
	segment   uint32 // the newest destination segment sent, 0 for the first
	unclosed  uint32 // the first destination segment not yet ended at the maximum
	code      uint8
	active    bool // an event is being tracked
	ended     bool // its end bit was seen: what follows in it repeats the end
}

// eventPlace is where one event packet goes on the destination clock.
type eventPlace struct {
	ts       uint32 // destination timestamp: the start of the packet's segment
	duration uint16 // the event's length within that segment
	// Segments closeFrom up to closeTo have not been ended yet and this
	// packet is past them: each is owed its packet of the maximum duration
	// before it goes.
	closeFrom, closeTo uint32
	// stale: the packet belongs to a segment already ended, and anything
	// it says was said by that segment's last packet.
	stale bool
}

// place tracks the event packet whose first block is block, at source
// timestamp srcTS, and says where it goes. dstTS is where a packet at srcTS
// would go were it the start of an event.
func (e *eventTrack) place(block []byte, srcTS, dstTS uint32, marker bool, from, to int) eventPlace {
	if !e.continues(block[0], srcTS, marker) {
		*e = eventTrack{srcStart: srcTS, dstStart: dstTS, code: block[0], active: true}
	}
	since := srcTS - e.srcStart
	e.srcLatest = max(e.srcLatest, since)
	if block[1]&eventEndBit != 0 {
		e.ended = true
	}
	length := (int64(since) + int64(binary.BigEndian.Uint16(block[2:]))) * int64(to) / int64(from)
	var segment uint32
	if length > 0 {
		// A length of exactly the maximum still ends its segment, as
		// the segment's last packet; only more begins the next one.
		segment = uint32((length - 1) / maxEventDuration)
	}
	p := eventPlace{
		ts:       e.dstStart + segment*maxEventDuration,
		duration: uint16(length - int64(segment)*maxEventDuration),
	}
	if segment < e.segment {
		p.stale = true
		return p
	}
	e.segment = segment
	if e.unclosed < segment {
		p.closeFrom, p.closeTo = e.unclosed, segment
		e.unclosed = segment
	}
	if p.duration == maxEventDuration {
		// This packet ends its segment itself.
		e.unclosed = max(e.unclosed, segment+1)
	}
	return p
}

// continues reports whether a packet of event code at source timestamp ts
// belongs to the event tracked. The segments of one event start whole
// maximum durations apart; once its end was seen, only the segments it had
// are its own, and a later timestamp is another press of the key. A marker
// bit on a new timestamp starts a new event whatever the arithmetic says.
func (e *eventTrack) continues(code uint8, ts uint32, marker bool) bool {
	if !e.active || code != e.code {
		return false
	}
	since := ts - e.srcStart
	switch {
	case since == 0:
		return true
	case marker || int32(since) < 0 || since%maxEventDuration != 0:
		return false
	}
	return since <= e.srcLatest || !e.ended
}

// segmentable reports whether an event payload is laid out in segments
// of the destination clock: it holds one event block, and the clocks
// differ. Several blocks in one packet (RFC 4733 §2.5.1.5, several events
// at once) share its one timestamp, which cannot start segments of each:
// those are rescaled in place and clamped.
func segmentable(payload []byte, from, to int) bool {
	return from != to && from != 0 && to != 0 && len(payload) >= eventBlockLen && len(payload) < 2*eventBlockLen
}

// rescaleEventBlocks converts the duration of every event block in payload
// from one clock to another in place, clamped to what the field holds.
func rescaleEventBlocks(payload []byte, from, to int) {
	if from == to || from == 0 || to == 0 {
		return
	}
	for i := 0; i+eventBlockLen <= len(payload); i += eventBlockLen {
		d := int64(binary.BigEndian.Uint16(payload[i+2:])) * int64(to) / int64(from)
		binary.BigEndian.PutUint16(payload[i+2:], uint16(min(d, maxEventDuration)))
	}
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

// segmentEnd builds in d.buf the packet that ends a segment of the event in
// block at the maximum duration: the event goes on, so without the end bit.
func (d *direction) segmentEnd(pt uint8, block []byte, seq uint16, ts uint32, marker bool) []byte {
	pkt := d.buf[:rtpHeaderLen+eventBlockLen]
	pkt[0] = 0x80 // version 2, no padding, extension or CSRC
	writeHeaderFields(pkt, pt, marker, seq, ts, d.out.ssrc)
	ev := pkt[rtpHeaderLen:]
	copy(ev, block[:eventBlockLen])
	ev[1] &^= eventEndBit
	binary.BigEndian.PutUint16(ev[2:], maxEventDuration)
	return pkt
}

// transcodeEvent carries a telephone-event packet across a transcoding
// direction. Events are never decoded: the packet is renumbered into the
// destination stream, its event placed on the destination clock (its
// start mapped the way the audio is) and its segments laid out there.
func (d *direction) transcodeEvent(r *route, pkt, payload []byte, now time.Time) {
	ts := r.tc.eventTimestamp(d, now)
	r.tc.flushBefore(d, r.audioPT, ts, now)
	marker := d.hdr.marker
	if segmentable(payload, r.inEventClock, r.outEventClock) {
		p := d.events.place(payload, d.hdr.timestamp, ts, marker, r.inEventClock, r.outEventClock)
		if p.stale {
			return
		}
		for seg := p.closeFrom; seg < p.closeTo; seg++ {
			at := d.events.dstStart + seg*maxEventDuration
			seq := d.out.next(at, now, 0)
			d.out.coverEvent(seq, at+maxEventDuration)
			d.send(d.segmentEnd(r.eventPT, payload, seq, at, marker))
			marker = false
		}
		ts = p.ts
		binary.BigEndian.PutUint16(payload[2:], p.duration)
	} else {
		rescaleEventBlocks(payload, r.inEventClock, r.outEventClock)
	}
	seq := d.out.next(ts, now, 0)
	d.out.coverEvent(seq, eventEnd(ts, payload))
	writeHeaderFields(pkt, r.eventPT, marker, seq, ts, d.out.ssrc)
	d.send(pkt)
}

// rewriteEvent is rewrite for a telephone-event packet, and reports
// whether to send it. Between different event clocks its event is placed
// on the destination clock; each segment end that the source never sent
// takes a sequence number of its own, and the relay's numbering moves on
// by one for it, so that the packets after it keep their order; one from
// before it that comes late keeps the number it had (outStream.shift).
func (d *direction) rewriteEvent(r *route, pkt, payload []byte, now time.Time) bool {
	seq, ts, rebased, ok := d.out.relay(d.hdr.ssrc, d.hdr.seq, d.hdr.timestamp, d.outClock, now)
	if !ok {
		d.from.drop(dropTooLate)
		return false
	}
	marker := rebased || d.hdr.marker
	if segmentable(payload, r.inEventClock, r.outEventClock) {
		p := d.events.place(payload, d.hdr.timestamp, ts, marker, r.inEventClock, r.outEventClock)
		if p.stale {
			return false
		}
		// Only the newest packet can make room in the numbering: one
		// reordered behind audio already sent has no free number before it.
		if n := p.closeTo - p.closeFrom; n > 0 && seq == d.out.seq {
			d.out.shift(d.hdr.seq, uint16(n))
			for seg := p.closeFrom; seg < p.closeTo; seg++ {
				d.send(d.segmentEnd(r.eventPT, payload, seq, d.events.dstStart+seg*maxEventDuration, marker))
				seq++
				marker = false
			}
		}
		ts = p.ts
		binary.BigEndian.PutUint16(payload[2:], p.duration)
	} else {
		rescaleEventBlocks(payload, r.inEventClock, r.outEventClock)
	}
	d.out.coverEvent(seq, eventEnd(ts, payload))
	writeHeaderFields(pkt, r.eventPT, marker, seq, ts, d.out.ssrc)
	return true
}
