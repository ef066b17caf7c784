package engine

import "time"

// Pacing. The encoders work in 20 ms frames, so a destination that asked
// for shorter packets (a=ptime:10 for G.711 or G.722) gets two or more
// from each frame. Sent back to back they would reach it in bursts, every
// 20 ms, which a receiver that sizes its jitter buffer by the packets'
// arrival (as endpoints and FreeSWITCH do) takes for jitter. So they go
// out as an endpoint sends them: the first at once, and each after it a
// packet time after the one before, when the transcoder's timer
// (bridge_transcode_timer.go) wakes the reader for it. Only the send time
// changes: sequence numbers, timestamps and the marker are the packets'
// whatever the time they go out at.
//
// A paced packet is never sent after audio that follows it: whatever the
// transcoder sends next (a new source packet's audio, a tail, the audio
// before an event, a new stream's) it sends the paced packets first, due
// or not. What drops the audio queued (a new route without the
// transcoder, a hold, a halt) drops them with it, as it does a tail.

// pacing reports whether packets wait for their due time.
func (t *transcoder) pacing() bool { return !t.pacedDue.IsZero() }

// pacedIsDue reports whether the next paced packet is due by now.
func (t *transcoder) pacedIsDue(now time.Time) bool {
	return t.pacing() && !now.Before(t.pacedDue)
}

// sendReady sends the packets that the frames encoded complete, as
// payload type pt: all at once when each lasts a frame or more, else the
// first at once (unless packets wait already) and the rest paced.
func (t *transcoder) sendReady(d *direction, pt uint8, now time.Time) {
	for t.packets.ready() && !t.pacing() {
		t.sendNext(d, pt, now)
		if t.packetTime < frameDuration && t.packets.ready() {
			t.pacedDue = now.Add(t.packetTime)
		}
	}
}

// While packets wait, all the packetizer holds is whole packets of the
// packet time they were cut for: a frame makes whole ones, and what is
// left of a source packet stays in the fifo. So the waiting ones are
// drained by what is queued, not by what fills a packet: should a
// re-INVITE have grown the packet time since, each goes out as a shorter
// packet at its time, rather than staying queued and putting every later
// packet of the talkspurt across two frames.

// sendPaced sends the packets waiting for their due time now, as payload
// type pt: what comes next follows them.
func (t *transcoder) sendPaced(d *direction, pt uint8, now time.Time) {
	if !t.pacing() {
		return
	}
	t.pacedDue = time.Time{}
	for t.packets.pending() {
		t.sendNext(d, pt, now)
	}
}

// sendDue sends the paced packets due by now, as payload type pt, and
// makes the next one due a packet time after the last.
func (t *transcoder) sendDue(d *direction, pt uint8, now time.Time) {
	for t.pacedIsDue(now) {
		if !t.packets.pending() {
			t.pacedDue = time.Time{}
			return
		}
		t.sendNext(d, pt, now)
		t.pacedDue = t.pacedDue.Add(t.packetTime)
	}
	if !t.packets.pending() {
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
