package engine

import (
	"time"

	"callgrid.dev/services/media/internal/udpio"
)

// The transcoder's timer. A transcoder sends some of what it encodes
// later than the source packet that brought it: the packets after the
// first that a 20 ms frame makes for a destination that asked for shorter
// ones, or that a source packet of several frames makes, each at its due
// time (bridge_transcode_pace.go), and the tail of a talkspurt once the
// source stopped (bridge_transcode_tail.go). One timer serves both, set
// for whichever is due first.
//
// The transcoder is the source leg's reader's alone, and the reader runs
// on the session's event loop, which has no timers. So the timer posts
// the wake-up to that loop for the source leg's RTP socket
// (udpio.Loop.Post): it runs between the socket's datagrams, and not at
// all once the session has taken its sockets out of the loop, which drops
// whatever is still waiting with the session. Only a transcoder that
// holds a packet back sets the timer, so neither the relay's packet path
// nor transcoding 20 ms source packets into 20 ms packets ever does, and
// into 40 or 60 ms ones only for the tail.

// setTimerOn has the transcoder's timer wake direction d's reader on
// loop, which reads the source leg's RTP socket sock; grace is
// Engine.talkspurtGrace.
func (t *transcoder) setTimerOn(loop *udpio.Loop, sock *udpio.Socket, d *direction, grace time.Duration) {
	// Made once: Post takes the same function every time, allocating
	// nothing.
	wake := func() { d.wake(t, time.Now()) }
	t.timer = time.AfterFunc(time.Hour, func() { loop.Post(sock, wake) })
	t.timer.Stop()
	t.tailGrace = grace
}

// arm sets the timer for the earliest of the next paced packet and the
// tail of the talkspurt, after anything changed either at now, and unsets
// it once neither waits. A tail is only due while audio is queued.
func (t *transcoder) arm(now time.Time) {
	if t.timer == nil {
		return
	}
	if !t.packets.pending() {
		t.tailDue = time.Time{}
	}
	due := t.tailDue
	if t.pacing() && (due.IsZero() || t.pacedDue.Before(due)) {
		due = t.pacedDue
	}
	switch {
	case !due.IsZero():
		t.timer.Reset(due.Sub(now))
		t.timerSet = true
	case t.timerSet:
		t.timer.Stop()
		t.timerSet = false
	}
}

// disarm forgets whatever was to be sent later, and unsets the timer.
func (t *transcoder) disarm() {
	t.pacedDue, t.tailDue = time.Time{}, time.Time{}
	if t.timerSet {
		t.timer.Stop()
		t.timerSet = false
	}
	// A wake-up already on its way finds nothing due.
}

// wake is the transcoder's timer going off, on the loop: it sends the
// paced packets that are due, or the tail of the talkspurt once due, when
// tc still carries the direction's audio where it queued it for. A
// wake-up from a timer that a later source packet set again finds nothing
// due, and leaves it set.
//
// The reader takes up a new route only with the next packet, and the
// source may have stopped: a re-INVITE, an UPDATE or a codec switch may
// have replaced the route since. A route that keeps tc (a session
// refresh, a new address or packet time) is taken up now, as the next
// packet would, and what is due goes out as it says. Under any other the
// queued audio belongs to a plan no longer in force, in a codec or payload
// type the destination may no longer take, and is dropped; on hold too,
// as the next talkspurt would find it too old.
func (d *direction) wake(tc *transcoder, now time.Time) {
	paced, tail := tc.pacedIsDue(now), tc.tailIsDue(now)
	if !paced && !tail {
		return
	}
	tc.timerSet = false // it went off
	d.sendLater(tc, tail, now)
	tc.arm(now)
}

// sendLater sends what wake found due: the tail of the talkspurt, or the
// paced packets due by now.
func (d *direction) sendLater(tc *transcoder, tail bool, now time.Time) {
	r := d.route.Load()
	if r != nil && r != d.cur && r.tc == tc {
		d.adopt(r)
	}
	if r == nil || r != d.cur || r.tc != tc {
		tc.dropQueued()
		return
	}
	if _, ok := d.rtpDestination(); !ok {
		tc.dropQueued()
		return
	}
	if tail {
		tc.sendTail(d, d.audioPT, now)
		return
	}
	tc.sendDue(d, d.audioPT, now)
}
