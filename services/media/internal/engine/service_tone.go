package engine

import (
	"fmt"
	"time"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/dsp"
)

const (
	// ToneHz is the frequency ServiceTone plays: the 1 kHz test tone
	// (ITU-T O.41 milliwatt) operators recognise.
	ToneHz = 1000
	// toneLevelDBFS keeps the tone well clear of clipping in every codec.
	toneLevelDBFS = -10
	// maxToneBurst is how many frames the tone catches up at once after
	// the clock goroutine was delayed; a longer stall skips ahead instead,
	// so the caller never gets a burst of stale audio.
	maxToneBurst = 3
)

// toneSource encodes a continuous tone in the caller's codec, one 20 ms
// frame at a time.
type toneSource struct {
	info codec.Info
	pt   uint8
	enc  codec.Encoder
	gen  *dsp.Tone
	pcm  []int16
}

// newToneSource builds the generator. Opus is encoded from 8 kHz PCM: a
// 1 kHz tone needs no more, and it is the cheapest rate to encode.
func newToneSource(info codec.Info, pt uint8, opus codec.OpusOptions) (*toneSource, error) {
	rate := info.SampleRate
	if info.Name == codec.Opus {
		rate = 8000
	}
	enc, err := codec.NewEncoder(info.Name, rate, opus)
	if err != nil {
		return nil, fmt.Errorf("tone in %s: %w", info.Name, err)
	}
	return &toneSource{
		info: info,
		pt:   pt,
		enc:  enc,
		gen:  dsp.NewTone(ToneHz, float64(rate), dsp.AmplitudeFromDBFS(toneLevelDBFS)),
		pcm:  make([]int16, codec.FrameSamplesAt(rate)),
	}, nil
}

func (t *toneSource) close() { t.enc.Close() }

// tonePlayer paces a toneSource onto leg A. Timestamps follow the wall
// clock (frame n of a run plays at start + n·20 ms), so ticker jitter does
// not accumulate as drift. It is owned by the session clock goroutine.
type tonePlayer struct {
	src    *toneSource
	out    outStream
	buf    []byte
	start  time.Time
	baseTS uint32
	sent   int
	marker bool
}

func newTonePlayer() *tonePlayer {
	return &tonePlayer{out: newOutStream(false), buf: make([]byte, maxPacket)}
}

// tick sends the frames due by now.
func (p *tonePlayer) tick(s *session, now time.Time) {
	src := s.tone.Load()
	if src == nil {
		return
	}
	if src != p.src {
		// New run (first, or the codec changed): continue the stream.
		p.src, p.start, p.sent, p.marker = src, now, 0, true
		p.baseTS = p.out.resumeTS(src.info.ClockRate, now)
	}
	// A frame is due at the tick nearest its time, not the first one at
	// or after it: a run starts at a tick, late by however long that tick
	// was, and the ticks after it are as often a little less late as more,
	// so taking them for before their frames' time would send no frame on
	// one tick and two on the next, for as long as the run lasts.
	due := int((now.Sub(p.start)+frameDuration/2)/frameDuration) + 1
	if due-p.sent > maxToneBurst {
		p.sent = due - 1
		p.marker = true
	}
	a := s.legs[0]
	for ; p.sent < due; p.sent++ {
		src.gen.Fill(src.pcm)
		if _, ok := a.rtpDestination(); !ok {
			// Keep the tone's phase and timing running while the caller
			// is on hold; just send nothing.
			p.marker = true
			continue
		}
		n, err := src.enc.Encode(src.pcm, p.buf[rtpHeaderLen:])
		if err != nil {
			a.drop(dropCodecError)
			continue
		}
		ts := p.baseTS + uint32(p.sent)*src.info.TimestampStep()
		// Stamped with when the frame is due, not when the tick ran: a
		// sender report extrapolates from it, and must land on the
		// timeline the timestamps follow, whatever the tick's lag.
		seq := p.out.next(ts, p.start.Add(time.Duration(p.sent)*frameDuration))
		p.buf[0] = 0x80
		writeHeaderFields(p.buf, src.pt, p.marker, seq, ts, p.out.ssrc)
		p.marker = false
		a.sendRTP(p.buf[:rtpHeaderLen+n])
	}
}
