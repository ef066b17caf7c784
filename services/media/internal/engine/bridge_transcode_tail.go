package engine

import (
	"time"

	"callgrid.dev/services/media/internal/udpio"
)

// The tail of a talkspurt. A destination that asked for 40 or 60 ms
// packets gets them from two or three source packets, so a source that
// stops (DTX, voice activity detection, a hold) leaves up to a packet less
// 20 ms queued, which the next talkspurt would find too old to send. It
// goes out on its own, as a shorter last packet, once the source is late
// by a packet time and the talkspurt grace (tailWait).
//
// The transcoder is the source leg's reader's alone, and the reader runs
// on the session's event loop, which has no timers. So the transcoder's
// timer posts the flush to that loop for the source leg's RTP socket
// (udpio.Loop.Post): it runs between the socket's datagrams, and not at
// all once the session has taken its sockets out of the loop. Only a
// transcoder that holds a packet back sets the timer, so neither the
// relay's packet path nor 20 ms transcoding ever does.

// defaultTalkspurtGrace is Engine.talkspurtGrace outside tests: how much
// later than a packet time a source's next packet may be before what is
// held back of it is sent as a talkspurt's tail. With none, a 20 ms source
// jittering by more than 20 ms, as Wi-Fi and mobile access routinely do,
// got a tail in the middle of a talkspurt, and every packet after it
// carried its audio a frame out of step with the packets before. With
// 20 ms the tail of a 20 ms source goes out 40 ms after the packet it
// would have been part of: late, but within what receivers' jitter
// buffers (40 to 80 ms) hold, and a receiver that finds it too late loses
// no more than it would without a tail.
const defaultTalkspurtGrace = 20 * time.Millisecond

// tailWait is how long after a source packet lasting span the source is
// taken to have stopped: its next packet is due a span on, and may be
// a span and grace later still.
func tailWait(span, grace time.Duration) time.Duration {
	return 2*span + grace
}

// flushTailsOn has the transcoder's timer flush the tail of direction d's
// talkspurt on loop, which reads the source leg's RTP socket sock.
func (t *transcoder) flushTailsOn(loop *udpio.Loop, sock *udpio.Socket, d *direction, grace time.Duration) {
	// Made once: Post takes the same function every time, allocating
	// nothing.
	flush := func() { d.sendTail(t, time.Now()) }
	t.tail = time.AfterFunc(time.Hour, func() { loop.Post(sock, flush) })
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
		wait := tailWait(span, t.tailGrace)
		t.tailDue = now.Add(wait)
		t.tail.Reset(wait)
	case !t.tailDue.IsZero():
		t.stopTail()
	}
}

// stopTail unsets the timer: nothing queued is a tail any more.
func (t *transcoder) stopTail() {
	if t.tail != nil && !t.tailDue.IsZero() {
		t.tail.Stop()
	}
	// A wake-up already on its way finds no tail due.
	t.tailDue = time.Time{}
}

// tailIsDue reports whether what is queued is a talkspurt's tail, to be
// sent or dropped now. A wake-up from a timer that a later source packet
// set again is early, and left for the next.
func (t *transcoder) tailIsDue(now time.Time) bool {
	if t.tailDue.IsZero() || now.Before(t.tailDue) {
		return false
	}
	t.tailDue = time.Time{}
	return t.packets.pending()
}

// sendTail sends what is encoded and not yet sent, as payload type pt.
func (t *transcoder) sendTail(d *direction, pt uint8, now time.Time) {
	for t.packets.pending() {
		t.sendNext(d, pt, now)
	}
	t.tailSent = true
}

// sendTail sends the tail of the talkspurt that tc holds, when it is due
// and tc still carries the direction's audio where it held it for.
//
// The reader takes up a new route only with the next packet, and the
// source has stopped: a re-INVITE, an UPDATE or a codec switch may have
// replaced the route since. A route that keeps tc (a session refresh, a
// new address or packet time) is taken up now, as the next packet would,
// and the tail goes out as it says. Under any other the held audio
// belongs to a plan no longer in force, in a codec or payload type the
// destination may no longer take, and is dropped.
func (d *direction) sendTail(tc *transcoder, now time.Time) {
	if !tc.tailIsDue(now) {
		return
	}
	r := d.route.Load()
	if r != nil && r != d.cur && r.tc == tc {
		d.adopt(r)
	}
	if r == nil || r != d.cur || r.tc != tc {
		tc.dropQueued()
		return
	}
	if _, ok := d.rtpDestination(); !ok {
		tc.dropQueued() // on hold: the next talkspurt would find it too old
		return
	}
	tc.sendTail(d, d.audioPT, now)
}
