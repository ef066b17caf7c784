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
// A source that does not send whole frames (10 ms packets, 30 ms ones)
// leaves the last of a talkspurt short of the encoder's 20 ms frame in the
// fifo, whatever the destination's packet time: up to 20 ms less a sample
// of PCM, resampled or not (the resampler holds back no samples: what
// it keeps is its filter's history, the few ms of group delay every frame
// is delayed by). It goes out with the tail, as one more frame padded
// with silence (flushFrame).
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
// packet lasting span, taken at now, left audio queued, and unsets it
// once none is (and no paced packet waits either).
func (t *transcoder) awaitTail(now time.Time, span time.Duration) {
	switch {
	case t.timer == nil:
		return
	case t.audioQueued():
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
	return t.audioQueued()
}

// audioQueued reports whether audio waits to be sent: encoded, or PCM
// short of a frame in the fifo.
func (t *transcoder) audioQueued() bool {
	return t.packets.pending() || t.fifoLen > 0
}

// sendTail sends what is queued, paced packets and what the fifo holds
// included, as payload type pt.
func (t *transcoder) sendTail(d *direction, pt uint8, now time.Time) {
	t.tailPad = t.flushFrame(d, pt, now)
	t.pacedDue = time.Time{}
	for t.packets.pending() {
		t.sendNext(d, pt, now)
	}
	t.tailSent = true
}

// flushFrame encodes what the fifo holds, short of a frame, as a frame
// padded with silence, after what is encoded, and returns how long the
// padding lasts in destination clock ticks. Every encoder here takes a
// whole 20 ms frame and nothing else, so padding is the one way to encode
// it, and it suits every codec. Opus could not carry the part frame as it
// is: it is an Opus frame size for some sources only (the 10 ms a 10 or
// 30 ms source leaves), and even then would need a second encoder
// (packetizable). G.722's octets could not be cut back to the audio after
// encoding the padding: the encoder's ADPCM state would part from the
// decoder's. Only G.711 could be cut short; one rule keeps one timeline
// for all, and the padding is silence, which costs the receiver nothing.
func (t *transcoder) flushFrame(d *direction, pt uint8, now time.Time) uint32 {
	if t.fifoLen == 0 {
		return 0
	}
	pad := t.frameTicks - uint32(int64(t.fifoLen)*int64(t.outClock)/int64(t.encRate))
	clear(t.fifo[t.fifoLen:t.frame])
	t.makeRoom(d, pt, now)
	t.encodeFrame(d, pt, t.fifo[:t.frame], now)
	t.fifoTS += t.frameTicks
	t.fifoLen = 0
	return pad
}

// afterPaddedTail returns destination timestamp ts of audio that follows
// a tail: moved past the silence the tail was padded with when the audio
// goes on from where the tail's audio ended, and the mapping of source
// timestamps with it. Such a source was late, not stopped; its audio
// would otherwise overlap the padding already sent, and every packet
// after it carry timestamps behind the stream's.
func (t *transcoder) afterPaddedTail(ts uint32) uint32 {
	if !t.tailSent || t.tailPad == 0 {
		return ts
	}
	end := t.queuedEnd()
	half := int32(t.frameTicks / 2)
	if off := int32(ts - (end - t.tailPad)); off < -half || off > half || int32(ts-end) >= 0 {
		return ts
	}
	t.outBase += end - ts
	return end
}
