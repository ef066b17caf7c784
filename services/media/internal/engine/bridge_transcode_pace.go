package engine

import "time"

// Pacing. The encoders work in 20 ms frames, so a destination that asked
// for shorter packets (a=ptime:10 for G.711 or G.722) gets two or more
// from each frame; and a source packet of several frames (a=ptime:40 or
// 60, or longer, from the source's endpoint) makes several packets of the
// destination's packet time at once. Sent back to back they would reach
// it in bursts, which a receiver that sizes its jitter buffer by the
// packets' arrival (as endpoints and FreeSWITCH do) takes for jitter. So
// they go out as an endpoint sends them: of the packets one push of PCM
// completes (a source packet's audio, or a frame concealed), the first at
// once, and each after it a packet time after the one before, when the
// transcoder's timer (bridge_transcode_timer.go) wakes the reader for it.
// Only the send time changes: sequence numbers, timestamps and the marker
// are the packets' whatever the time they go out at.
//
// A paced packet is never sent after audio that follows it: whatever the
// transcoder sends next (a new source packet's audio, a tail, the audio
// before an event, a new stream's) it sends the paced packets first, due
// or not. What drops the audio queued (a new route without the
// transcoder, a hold, a halt) drops them with it, as it does a tail, but
// for the source switching codec, which sends them and the tail with them
// (sendQueuedAcrossSwitch).

// pacing reports whether packets wait for their due time.
func (t *transcoder) pacing() bool { return !t.pacedDue.IsZero() }

// pacedIsDue reports whether the next paced packet is due by now.
func (t *transcoder) pacedIsDue(now time.Time) bool {
	return t.pacing() && !now.Before(t.pacedDue)
}

// sendReady sends the packets that the frames encoded so far of one push
// of PCM complete, as payload type pt: the first of them at once (first
// says none went yet), and those after it paced. It returns first for the
// push's next frame. A 20 ms frame into 20 ms packets is sent at once and
// never sets the timer.
func (t *transcoder) sendReady(d *direction, pt uint8, first bool, now time.Time) bool {
	if first && !t.pacing() && t.packets.ready() {
		t.sendNext(d, pt, now)
		first = false
	}
	if t.packets.ready() {
		if !t.pacing() {
			t.pacedDue = now.Add(t.packetTime)
		}
		t.pacedTicks = t.packets.readyTicks()
	}
	return first
}

// While packets wait, the packetizer holds them, whole packets of the
// packet time they were cut for, and after them what of the next packet
// is encoded (a frame of a source packet into 40 ms packets, or octets
// when the packet time is no multiple of a frame's). pacedTicks says how
// much is paced, so that only that goes out at the due times: the rest
// waits for the audio that completes its packet, or the tail, as it does
// unpaced. And what is paced is drained by pacedTicks, not by what fills a
// packet: should a re-INVITE have grown the packet time since, each goes
// out at its time, a shorter packet if nothing behind it completes one,
// rather than staying queued and putting every later packet of the
// talkspurt across two frames.

// sendPaced sends the packets waiting for their due time now, as payload
// type pt: what comes next follows them.
func (t *transcoder) sendPaced(d *direction, pt uint8, now time.Time) {
	if !t.pacing() {
		return
	}
	t.pacedDue = time.Time{}
	for t.pacedTicks > 0 && t.packets.pending() {
		t.pacedTicks -= min(t.sendNext(d, pt, now), t.pacedTicks)
	}
}

// sendDue sends the paced packets due by now, as payload type pt, and
// makes the next one due a packet time after the last.
func (t *transcoder) sendDue(d *direction, pt uint8, now time.Time) {
	for t.pacedIsDue(now) && t.pacedTicks > 0 && t.packets.pending() {
		t.pacedTicks -= min(t.sendNext(d, pt, now), t.pacedTicks)
		t.pacedDue = t.pacedDue.Add(t.packetTime)
	}
	if t.pacedTicks == 0 || !t.packets.pending() {
		t.pacedDue = time.Time{}
	}
}

// makeRoom sends the paced packets now, as payload type pt, when the
// packetizer has no room left for the next frame: a sample-based
// encoder's frame takes an octet a clock tick. A source packet holds no
// more than a datagram's worth, which takes less than the packetizer
// holds, so this is only a guard.
func (t *transcoder) makeRoom(d *direction, pt uint8, now time.Time) {
	if t.pacing() && len(t.packets.space()) < int(t.frameTicks) {
		t.sendPaced(d, pt, now)
	}
}

// sendQueuedAcrossSwitch sends what the old codec's transcoder queued when
// the source switches codec (RFC 3264 §6.1), before the reader takes up
// next, the route for the new one: the packets paced out of its last
// source packet, and the audio encoded toward a packet not yet whole (a
// frame of a 40 or 60 ms packet). The new codec has another transcoder
// (or none, relayed), which would leave them to be dropped as a new
// route's are, up to 40 ms of speech; but the destination is sent the
// same codec and payload type as before, so they are as good as they
// were, and due before the new codec's first audio, whose stream begins
// after them. What is held back goes as a talkspurt's tail does
// (sendTail): the rest of its packet is in the new codec's stream, which
// cannot be packed with it. PCM short of a frame in the fifo goes with the
// old stream, as it does at a talkspurt's end (bridge_transcode_tail.go).
// A switch that changes what the destination is sent drops them all, as
// any new route does.
func (d *direction) sendQueuedAcrossSwitch(next *route, now time.Time) {
	old := d.cur
	if old == nil || old.tc == nil || next == nil || next.tc == old.tc || !old.tc.packets.pending() {
		return
	}
	if next.audioPT != old.audioPT || next.outClock != old.outClock {
		return
	}
	if _, ok := d.rtpDestination(); ok {
		old.tc.sendTail(d, old.audioPT, now)
	} else {
		old.tc.dropQueued() // on hold: the next talkspurt would find them too old
	}
	old.tc.arm(now) // nothing left to wake for
}
