package engine

import (
	"fmt"
	"time"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/quality"
)

const (
	// maxConcealFrames is the longest run of lost packets that is concealed
	// (PLC, or Opus FEC for the last one). Longer gaps are silence gaps
	// (DTX, a hold, a network outage): concealing them would invent audio,
	// so the output stream jumps its timestamp instead.
	maxConcealFrames = 3
	// maxDecodedSamples holds the largest payload a decoder may produce: a
	// full datagram of G.722 (two samples per byte), which also covers
	// 120 ms of Opus at 16 kHz.
	maxDecodedSamples = 2 * maxPacket
)

// transcoder converts one direction's audio between codecs: decode, resample
// when the PCM rates differ, re-frame into the encoder's 20 ms, encode, and
// gather the frames into packets of the packet time the destination asked
// for. It is owned by the source leg's reader once routed.
type transcoder struct {
	dec codec.Decoder
	enc codec.Encoder
	res *codec.Resampler // nil when decoder and encoder share a PCM rate
	fec bool             // the decoder can recover a lost frame from the next packet
	to  codec.Info       // the destination's codec

	inClock, outClock int    // RTP clocks
	decRate, encRate  int    // PCM rates out of the decoder and into the encoder
	frame             int    // encoder frame, samples at encRate
	frameTicks        uint32 // one frame in destination clock ticks

	decoded, resampled []int16
	fifo               []int16 // PCM at encRate awaiting a whole frame
	fifoLen            int
	fifoTS             uint32 // destination timestamp of fifo[0]; with the fifo empty, of the next frame
	// packets holds the frames encoded and not yet sent, which follow on
	// from one another and end where the fifo starts.
	packets *packetizer
	// packetTime is what each packet sent holds (route.packetTime, as
	// the codec allows).
	packetTime time.Duration
	// opus is what the encoder runs as (route.opus); only an Opus
	// encoder takes it.
	opus codec.OpusOptions
	// timer wakes the reader to send what waits for later
	// (bridge_transcode_timer.go); nil for none. timerSet says it may be
	// set. pacedDue is when the next of the packets paced out of a frame
	// or a source packet's frames is due (bridge_transcode_pace.go), zero
	// while none waits, and pacedTicks how long those waiting last, in
	// destination clock ticks (meaningful only while pacing). tailDue is
	// when what is queued then is a talkspurt's tail
	// (bridge_transcode_tail.go), zero for none; tailSent says the tail
	// went out, so the next audio is checked for following on from it.
	timer      *time.Timer
	timerSet   bool
	tailGrace  time.Duration // Engine.talkspurtGrace
	pacedDue   time.Time
	pacedTicks uint32
	tailDue    time.Time
	tailSent   bool

	started bool
	inSSRC  uint32
	lastSeq uint16
	// A jump in sequence waiting for the next packet to confirm it.
	restartPending bool
	restartSeq     uint16
	lastTS         uint32 // source timestamp of the last audio packet
	inBase         uint32 // source timestamp mapped to outBase
	outBase        uint32
	marker         bool // next emitted frame starts a talkspurt
}

// newTranscoder builds the pipeline from one codec to another. Opus works
// at any of the telephony rates, so it is run at the rate of the other side
// and the pipeline needs no resampler; only G.722 (16 kHz) against G.711
// (8 kHz) resamples.
func newTranscoder(from, to codec.Info, opus codec.OpusOptions) (*transcoder, error) {
	decRate, encRate := from.SampleRate, to.SampleRate
	switch {
	case from.Name == codec.Opus && to.Name == codec.Opus:
		// Same codec never transcodes; keep the native rate regardless.
	case from.Name == codec.Opus:
		decRate = to.SampleRate
	case to.Name == codec.Opus:
		encRate = from.SampleRate
	}
	dec, err := codec.NewDecoder(from.Name, decRate)
	if err != nil {
		return nil, fmt.Errorf("transcode %s to %s: %w", from.Name, to.Name, err)
	}
	enc, err := codec.NewEncoder(to.Name, encRate, opus)
	if err != nil {
		dec.Close()
		return nil, fmt.Errorf("transcode %s to %s: %w", from.Name, to.Name, err)
	}
	t := &transcoder{
		dec:        dec,
		enc:        enc,
		fec:        from.Name == codec.Opus,
		to:         to,
		inClock:    from.ClockRate,
		outClock:   to.ClockRate,
		decRate:    decRate,
		encRate:    encRate,
		frame:      codec.FrameSamplesAt(encRate),
		frameTicks: to.TimestampStep(),
		decoded:    make([]int16, maxDecodedSamples),
		packets:    newPacketizer(to),
		packetTime: frameDuration,
		opus:       opus,
	}
	resampledLen := maxDecodedSamples
	if decRate != encRate {
		if t.res, err = codec.NewResampler(decRate, encRate); err != nil {
			t.close()
			return nil, fmt.Errorf("transcode %s to %s: %w", from.Name, to.Name, err)
		}
		resampledLen = t.res.OutputLen(maxDecodedSamples) + 1
		t.resampled = make([]int16, resampledLen)
	}
	t.fifo = make([]int16, t.frame+resampledLen)
	return t, nil
}

func (t *transcoder) close() {
	if t.timer != nil {
		t.timer.Stop()
	}
	t.dec.Close()
	t.enc.Close()
}

// usePacketTime makes the packets sent from here on last every, or 20 ms
// if the destination's codec cannot be sent so. What is queued goes out
// in them.
func (t *transcoder) usePacketTime(every time.Duration) {
	if !packetizable(t.to, every) {
		every = frameDuration
	}
	t.packetTime = every
	t.packets.setPacketTime(every)
}

// useOpus makes the encoder run as opts say from its next frame, when it
// does not already: the destination's fmtp changed. The encoder keeps its
// state, so the stream goes on without a restart. Encoders that take no
// options (G.711, G.722) are left alone. Options the encoder refuses leave
// it as it was, and are tried again with the next route.
func (t *transcoder) useOpus(opts codec.OpusOptions) error {
	if opts == t.opus {
		return nil
	}
	if err := codec.Reconfigure(t.enc, opts); err != nil {
		return fmt.Errorf("transcode to %s: %w", t.to.Name, err)
	}
	t.opus = opts
	return nil
}

// halt forgets the stream the transcoder carried, and what it queued of
// it, paced packets included: the next packet begins a stream anew.
func (t *transcoder) halt() {
	t.started = false
	t.fifoLen = 0
	t.packets.reset()
	t.disarm()
	t.tailSent = false
}

// begin starts mapping a (new) source stream onto the destination stream,
// continuing the destination's timestamps from where they stand now. The
// packets paced out of the old stream's last source packet go first: they
// are whole, and the new stream's audio follows them.
func (t *transcoder) begin(d *direction, now time.Time) {
	t.sendPaced(d, d.audioPT, now)
	t.started = true
	t.restartPending = false
	t.inSSRC = d.hdr.ssrc
	t.lastSeq = d.hdr.seq - 1
	t.lastTS = d.hdr.timestamp
	t.inBase = d.hdr.timestamp
	t.outBase = d.out.resumeTS(t.outClock, now)
	t.fifoLen = 0
	t.packets.reset()
	t.disarm()
	t.tailSent = false
	t.marker = true
	d.avoidCollisionAhead(now)
}

// track notes the packet in d.hdr and returns how many packets were lost
// just before it; ok is false for a duplicate, a packet too late to play,
// or a stray. A jump in sequence numbers beyond what loss or reordering
// explains (RFC 3550 A.1's MAX_DROPOUT and MAX_MISORDER) is a source that
// started over on the same SSRC: once the packet after it follows on, the
// stream is begun anew rather than every later packet taken for a late one.
func (t *transcoder) track(d *direction, now time.Time) (lost int, ok bool) {
	if !t.started || d.hdr.ssrc != t.inSSRC {
		t.begin(d, now)
	}
	delta := d.hdr.seq - t.lastSeq // modulo 2^16
	switch {
	case delta == 0 || delta > 1<<16-quality.MaxMisorder:
		return 0, false
	case delta >= quality.MaxDropout:
		if !t.restartPending || d.hdr.seq != t.restartSeq {
			t.restartPending, t.restartSeq = true, d.hdr.seq+1
			return 0, false
		}
		t.begin(d, now)
		delta = 1
	}
	t.restartPending = false
	t.lastSeq = d.hdr.seq
	return int(delta) - 1, true
}

// mapTS converts a source timestamp to the destination clock.
func (t *transcoder) mapTS(in uint32) uint32 {
	delta := int64(int32(in - t.inBase))
	out := t.outBase + uint32(delta*int64(t.outClock)/int64(t.inClock))
	// Re-anchor long before the signed difference could wrap.
	if delta > 1<<30 {
		t.inBase, t.outBase = in, out
	}
	return out
}

// eventTimestamp tracks an event packet in the source stream and returns
// its timestamp on the destination clock.
func (t *transcoder) eventTimestamp(d *direction, now time.Time) uint32 {
	_, _ = t.track(d, now)
	return t.mapTS(d.hdr.timestamp)
}

// audio transcodes one source packet, emitting every frame it completes.
// It returns false if the payload could not be decoded.
func (t *transcoder) audio(d *direction, r *route, payload []byte, now time.Time) bool {
	lost, ok := t.track(d, now)
	if !ok {
		return true
	}
	// What waits goes ahead of this packet's audio, as it was (a marker
	// this packet carries is its own).
	t.sendPaced(d, r.audioPT, now)
	if d.hdr.marker {
		t.marker = true
	}
	if lost > 0 && lost <= maxConcealFrames {
		step := (d.hdr.timestamp - t.lastTS) / uint32(lost+1)
		for i := 1; i <= lost; i++ {
			var next []byte
			if t.fec && i == lost {
				// Opus carries a low-rate copy of the previous frame
				// in-band; the packet that just arrived rebuilds it.
				next = payload
			}
			n, err := t.dec.DecodeLost(next, t.decoded)
			if err != nil {
				break
			}
			t.push(d, r, t.decoded[:n], t.mapTS(t.lastTS+uint32(i)*step), now)
		}
	}
	t.lastTS = d.hdr.timestamp
	n, err := t.dec.Decode(payload, t.decoded)
	if err != nil {
		t.arm(now) // for what the concealed frames left paced
		return false
	}
	t.push(d, r, t.decoded[:n], t.mapTS(d.hdr.timestamp), now)
	t.awaitTail(now, time.Duration(n)*time.Second/time.Duration(t.decRate))
	return true
}

// push queues decoded PCM whose first sample plays at destination
// timestamp ts, encodes every complete frame and sends every complete
// packet.
func (t *transcoder) push(d *direction, r *route, pcm []int16, ts uint32, now time.Time) {
	if t.res != nil {
		pcm = t.resampled[:t.res.Process(pcm, t.resampled)]
	}
	// A concealed frame's paced packets go ahead of what follows it.
	t.sendPaced(d, r.audioPT, now)
	if t.fifoLen > 0 || t.packets.pending() || t.tailSent {
		if off := int32(ts - t.queuedEnd()); off > int32(t.frameTicks/2) || off < -int32(t.frameTicks/2) {
			// A gap or overlap in the source: what is queued belongs to
			// a finished talkspurt and is dropped.
			t.dropQueued()
		}
		t.tailSent = false
	}
	if t.fifoLen == 0 && !t.packets.pending() {
		t.fifoTS = ts
	}
	if t.fifoLen+len(pcm) > len(t.fifo) {
		t.dropQueued()
		t.fifoTS = ts
		pcm = pcm[:min(len(pcm), len(t.fifo))]
	}
	t.fifoLen += copy(t.fifo[t.fifoLen:], pcm)
	done := 0
	first := true
	for t.fifoLen-done >= t.frame {
		t.makeRoom(d, r.audioPT, now)
		t.encodeFrame(d, r.audioPT, t.fifo[done:done+t.frame], now)
		t.fifoTS += t.frameTicks
		done += t.frame
		// Sent as soon as whole, or paced, so that the packetizer never
		// holds more than a packet and the frame that completes it, or
		// the packets paced out of this PCM's frames and the start of
		// the next.
		first = t.sendReady(d, r.audioPT, first, now)
	}
	t.fifoLen = copy(t.fifo, t.fifo[done:t.fifoLen])
}

// queuedEnd is the destination timestamp right after the audio queued, in
// the fifo or encoded: where the next PCM follows on.
func (t *transcoder) queuedEnd() uint32 {
	return t.fifoTS + uint32(int64(t.fifoLen)*int64(t.outClock)/int64(t.encRate))
}

// dropQueued drops the audio queued, paced packets included; what comes
// next starts a talkspurt.
func (t *transcoder) dropQueued() {
	t.fifoLen = 0
	t.packets.reset()
	t.pacedDue = time.Time{}
	t.marker = true
}

// encodeFrame encodes the frame of PCM at t.fifoTS into the packets.
func (t *transcoder) encodeFrame(d *direction, pt uint8, pcm []int16, now time.Time) {
	n, err := t.enc.Encode(pcm, t.packets.space())
	if err != nil {
		d.from.drop(dropCodecError)
		// A packet cannot hold a hole: the frames before it go too,
		// but for the whole packets paced out of them.
		t.sendPaced(d, pt, now)
		t.packets.reset()
		return
	}
	t.packets.add(n, t.fifoTS)
}

// sendNext sends the next packet of what is encoded, as payload type pt,
// and returns how long it lasts in clock ticks: 0 when it could not be
// made, and what was encoded is dropped.
func (t *transcoder) sendNext(d *direction, pt uint8, now time.Time) uint32 {
	n, ts, ticks, err := t.packets.next(d.buf[rtpHeaderLen:])
	if err != nil {
		d.from.drop(dropCodecError)
		return 0
	}
	d.emit(pt, ts, t.marker, n, t.packets.duration(ticks), now)
	t.marker = false
	return ticks
}

// flushBefore sends what is encoded and not yet sent ahead of an event
// packet at destination timestamp ts, in a shorter packet if it is not a
// whole one, as a talkspurt's tail is sent: the audio before a digit goes
// before it, rather than after it or not at all. Audio queued from the
// event's start on is after it, and stays queued. Audio that ended before
// a pause ended a talkspurt, and is dropped as the audio path would drop
// it. PCM short of a frame in the fifo stays there, as at a talkspurt's
// end (bridge_transcode_tail.go).
func (t *transcoder) flushBefore(d *direction, pt uint8, ts uint32, now time.Time) {
	t.sendPaced(d, pt, now) // whole packets, and before the event whatever its time
	if !t.packets.pending() || int32(t.packets.ts-ts) >= 0 {
		// Nothing is queued, or what is follows the event: audio that
		// resumed while its end is retransmitted, and waits for its
		// packet to fill as any audio does.
		return
	}
	if int32(ts-t.queuedEnd()) > int32(t.frameTicks/2) {
		t.dropQueued()
	} else {
		t.sendTail(d, pt, now)
	}
	t.arm(now) // no tail left to wait for
}
