package engine

import (
	"net/netip"
	"time"

	"callgrid.dev/services/media/internal/udpio"
)

// The tail of a talkspurt. A destination that asked for 40 or 60 ms
// packets gets them from two or three source packets, so a source that
// stops (DTX, voice activity detection, a hold) leaves up to a packet less
// 20 ms queued, which the next talkspurt would find too old to send. It
// goes out on its own, as a shorter last packet, once the source is a
// packet late.
//
// The transcoder is the source leg's reader's alone, and the reader runs
// only when a datagram arrives on one of the session's sockets: the event
// loop has no timers. So the transcoder's timer wakes the reader the way
// the loop knows, with a datagram: the leg's RTCP socket sends it one from
// itself, which its handler tells from RTCP by its source (rtcpPort.self).
// Only a transcoder that holds a packet back sets the timer, so neither the
// relay's packet path nor 20 ms transcoding ever does.

// tailWake is the datagram that wakes a reader; WriteTo sends nothing empty.
var tailWake = []byte{0}

// wakeTailsVia has the transcoder's timer wake its reader with a datagram
// from sock to itself at self, once the source is a packet time late, or
// grace if that is longer.
func (t *transcoder) wakeTailsVia(sock *udpio.Socket, self netip.AddrPort, grace time.Duration) {
	t.tail = time.AfterFunc(time.Hour, func() { _ = sock.WriteTo(tailWake, self) })
	t.tail.Stop()
	t.tailGrace = grace
}

// awaitTail sets the timer for the tail of the talkspurt after a source
// packet lasting span, taken at now, left a packet's audio queued, and
// unsets it once none is.
func (t *transcoder) awaitTail(now time.Time, span time.Duration) {
	switch {
	case t.tail == nil:
	case t.packets.pending():
		// The next source packet is due a span on: a span later still,
		// the source stopped.
		wait := span + max(span, t.tailGrace)
		t.tailDue = now.Add(wait)
		t.tail.Reset(wait)
	case !t.tailDue.IsZero():
		t.tail.Stop()
		t.tailDue = time.Time{}
	}
}

// sendTail sends what is encoded and not yet sent, as payload type pt,
// once the source stopped with it queued. A wake-up from a timer that a
// later source packet set again is early, and left for the next.
func (t *transcoder) sendTail(d *direction, pt uint8, now time.Time) {
	if t.tailDue.IsZero() || now.Before(t.tailDue) {
		return
	}
	t.tailDue = time.Time{}
	if !t.packets.pending() {
		return
	}
	for t.packets.pending() {
		t.sendNext(d, pt, now)
	}
	t.tailSent = true
}

// sendTail is the transcoder's, when the direction transcodes and has
// somewhere to send.
func (d *direction) sendTail(now time.Time) {
	if d == nil || d.mode != routeTranscode {
		return
	}
	if _, ok := d.rtpDestination(); !ok {
		return
	}
	d.cur.tc.sendTail(d, d.audioPT, now)
}

// selfAddr is where a socket bound to bind and port gets the datagrams it
// sends itself.
func selfAddr(bind netip.Addr, port int) netip.AddrPort {
	addr := bind
	switch {
	case !addr.IsUnspecified():
	case addr.Is4():
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	default:
		addr = netip.IPv6Loopback()
	}
	return netip.AddrPortFrom(addr, uint16(port))
}
