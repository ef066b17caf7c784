package engine

import "time"

// The tail of a talkspurt. A destination that asked for 40 or 60 ms
// packets gets them from two or three source packets, so a source that
// stops (DTX, voice activity detection, a hold) leaves up to a packet less
// 20 ms queued, which the next talkspurt would find too old to send. It
// goes out on its own, as a shorter last packet, once the source is late
// by a packet time and the talkspurt grace (tailWait), when the
// transcoder's timer (bridge_transcode_timer.go) wakes the reader for it.
//
// Only encoded audio makes a tail. A source that does not send whole
// frames (10 ms packets, 30 ms ones) may leave PCM short of the encoder's
// 20 ms frame in the fifo at a talkspurt's end, or before a digit; it
// stays there, for a source that was only late to complete the frame with
// the audio that follows, and the next talkspurt's audio drops it
// otherwise. The encoders take whole frames only, and padding it with
// silence would put the destination's timeline a part frame ahead of the
// source's whenever the source was late rather than stopped.
//
// What a tail is made of goes out the same way, at once, ahead of a digit
// (flushBefore) and of a new codec's first audio when the source switches
// codec (sendQueuedAcrossSwitch): the audio after either cannot complete
// the packet it was held back for.

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

// awaitTail sets the timer for the tail of the talkspurt after a source
// packet lasting span, taken at now, left encoded audio queued, and unsets
// it once none is (and no paced packet waits either).
func (t *transcoder) awaitTail(now time.Time, span time.Duration) {
	switch {
	case t.timer == nil:
		return
	case t.packets.pending():
		t.tailDue = now.Add(tailWait(span, t.tailGrace))
	default:
		t.tailDue = time.Time{}
	}
	t.arm(now)
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

// sendTail sends what is encoded and not yet sent, paced packets
// included, as payload type pt.
func (t *transcoder) sendTail(d *direction, pt uint8, now time.Time) {
	t.pacedDue = time.Time{}
	for t.packets.pending() {
		t.sendNext(d, pt, now)
	}
	t.tailSent = true
}
