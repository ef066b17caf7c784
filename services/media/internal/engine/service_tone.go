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
	// maxToneBurst is how many packets the tone catches up at once after
	// the clock goroutine was delayed; a longer stall skips ahead instead,
	// so the caller never gets a burst of stale audio.
	maxToneBurst = 3
)

// toneSource encodes a continuous tone in the caller's codec, one packet of
// the negotiated packet time at a time. Its encoder is used by the session
// clock with session.toneMu held.
type toneSource struct {
	info        codec.Info
	pt          uint8
	enc         codec.Encoder
	gen         *dsp.Tone
	pcm         []int16       // one 20 ms frame, what the encoder takes
	packetTime  time.Duration // what each packet holds
	packetTicks uint32        // the same in RTP clock ticks
	frames      *packetizer
	// opus is what the encoder runs as, as the caller's fmtp allows.
	// Negotiation reads it under session.mu, and changes it with
	// session.toneMu held too (reconfigureTone).
	opus codec.OpusOptions
}

// newToneSource builds the generator of packets every long, a length that
// packetizable. Opus is encoded from 8 kHz PCM: a 1 kHz tone needs no
// more, and it is the cheapest rate to encode.
func newToneSource(info codec.Info, pt uint8, every time.Duration, opus codec.OpusOptions) (*toneSource, error) {
	if !packetizable(info, every) {
		return nil, fmt.Errorf("tone in %s in %v packets: %w", info.Name, every, codec.ErrUnsupported)
	}
	rate := info.SampleRate
	if info.Name == codec.Opus {
		rate = 8000
	}
	enc, err := codec.NewEncoder(info.Name, rate, opus)
	if err != nil {
		return nil, fmt.Errorf("tone in %s: %w", info.Name, err)
	}
	frames := newPacketizer(info)
	frames.setPacketTime(every)
	return &toneSource{
		info:        info,
		pt:          pt,
		enc:         enc,
		gen:         dsp.NewTone(ToneHz, float64(rate), dsp.AmplitudeFromDBFS(toneLevelDBFS)),
		pcm:         make([]int16, codec.FrameSamplesAt(rate)),
		packetTime:  every,
		packetTicks: frames.packetTicks,
		frames:      frames,
		opus:        opus,
	}, nil
}

func (t *toneSource) close() { t.enc.Close() }

// reconfigureTone makes t, the tone playing, encode as opts say from its
// next frame: the caller's fmtp changed, and the tone plays on rather than
// start a new run. The clock encodes with toneMu held, so it is not using
// the encoder meanwhile. A tone the session released is left as it is:
// nothing plays it any more. The caller holds s.mu.
func (s *session) reconfigureTone(t *toneSource, opts codec.OpusOptions) error {
	s.toneMu.Lock()
	defer s.toneMu.Unlock()
	if s.toneReleased {
		return nil
	}
	if err := codec.Reconfigure(t.enc, opts); err != nil {
		return fmt.Errorf("tone in %s: %w", t.info.Name, err)
	}
	t.opus = opts
	return nil
}

// packet writes the next packet's payload into out and returns its length.
func (t *toneSource) packet(out []byte) (int, error) {
	if err := t.queuePacket(); err != nil {
		return 0, err
	}
	n, _, ticks, err := t.frames.next(out)
	if err != nil {
		return 0, fmt.Errorf("tone packet: %w", err)
	}
	if ticks != t.packetTicks {
		// Opus frames that could not share the packet: it would be
		// shorter than its place on the tone's timeline.
		t.frames.reset()
		return 0, fmt.Errorf("tone packet of %d ticks, want %d: %w", ticks, t.packetTicks, errOpusFramesDiffer)
	}
	return n, nil
}

// skip moves the tone on by one packet that is not sent, keeping its phase
// and timing running (the caller is on hold). Opus frames are not encoded
// for it: they are what the tone costs. A sample-based stream is cut at
// any octet, so the packet skipped is encoded like any other, which costs
// next to nothing.
func (t *toneSource) skip() {
	if t.info.Name == codec.Opus {
		for range t.packetTime / frameDuration {
			t.gen.Fill(t.pcm)
		}
		return
	}
	if t.queuePacket() == nil {
		t.frames.discard()
	}
}

// queuePacket encodes 20 ms frames until a packet's worth is queued.
func (t *toneSource) queuePacket() error {
	for !t.frames.ready() {
		t.gen.Fill(t.pcm)
		n, err := t.enc.Encode(t.pcm, t.frames.space())
		if err != nil {
			t.frames.reset()
			return fmt.Errorf("encode tone: %w", err)
		}
		t.frames.add(n, 0)
	}
	return nil
}

// toneClock ticks a tone player once a packet of the tone it plays: the
// packet time follows the caller's SDP, and changes with it.
type toneClock struct {
	player *tonePlayer
	ticker *time.Ticker
	every  time.Duration
}

func newToneClock(p *tonePlayer) *toneClock {
	return &toneClock{player: p, ticker: time.NewTicker(frameDuration), every: frameDuration}
}

// ticks is the channel the ticks come on; none for a session without tone.
func (c *toneClock) ticks() <-chan time.Time {
	if c == nil {
		return nil
	}
	return c.ticker.C
}

// tick sends the packets due and moves the ticker to the packet time of
// the tone now playing.
func (c *toneClock) tick(s *session, now time.Time) {
	c.player.tick(s, now)
	if every := c.player.interval(); every != c.every {
		c.every = every
		c.ticker.Reset(every)
	}
}

func (c *toneClock) stop() { c.ticker.Stop() }

// tonePlayer paces a toneSource onto leg A. Timestamps follow the wall
// clock (packet n of a run plays at start + n times the packet time), so
// ticker jitter does not accumulate as drift. It is owned by the session
// clock goroutine.
type tonePlayer struct {
	// src is the tone of the run playing. Once a negotiation replaced it
	// (and closed its encoder), only what it was made with is read of it,
	// until the next tick takes up the new one.
	src    *toneSource
	out    outStream
	buf    []byte
	start  time.Time
	baseTS uint32
	sent   int
	marker bool
	// checked is the caller's SSRC last checked against the tone's.
	checked heardSSRC
}

func newTonePlayer() *tonePlayer {
	return &tonePlayer{out: newOutStream(false), buf: make([]byte, maxPacket)}
}

// interval is how often the player is to be ticked: once a packet of the
// tone it plays.
func (p *tonePlayer) interval() time.Duration {
	if p.src == nil {
		return frameDuration
	}
	return p.src.packetTime
}

// tick sends the packets due by now. It holds the session's toneMu
// throughout, so that the tone it plays is not closed under it.
func (p *tonePlayer) tick(s *session, now time.Time) {
	s.toneMu.Lock()
	defer s.toneMu.Unlock()
	src := s.tone.Load()
	if src == nil {
		return
	}
	if src != p.src {
		// New run (first, or the codec or packet time changed): continue
		// the stream.
		p.src, p.start, p.sent, p.marker = src, now, 0, true
		p.baseTS = p.out.resumeTS(src.info.ClockRate, now)
	}
	a := s.legs[0]
	if remote := heardSSRC(a.remoteSSRC.Load()); remote != p.checked {
		// The leg's reader notes the caller's SSRC; the tone's stream is
		// this goroutine's to renumber.
		p.checked = remote
		if ssrc, ok := remote.get(); ok {
			s.avoidCollision(a, &p.out, ssrc, a.rtpSource(), now)
		}
	}
	every := src.packetTime
	// A packet is due at the tick nearest its time, not the first one at
	// or after it: a run starts at a tick, late by however long that tick
	// was, and the ticks after it are as often a little less late as more,
	// so taking them for before their packets' time would send none on
	// one tick and two on the next, for as long as the run lasts.
	due := int((now.Sub(p.start)+every/2)/every) + 1
	if due-p.sent > maxToneBurst {
		p.sent = due - 1
		p.marker = true
	}
	for ; p.sent < due; p.sent++ {
		if _, ok := a.rtpDestination(); !ok {
			// Keep the tone's phase and timing running while the caller
			// is on hold; just send nothing.
			src.skip()
			p.marker = true
			continue
		}
		n, err := src.packet(p.buf[rtpHeaderLen:])
		if err != nil {
			a.drop(dropCodecError)
			continue
		}
		ts := p.baseTS + uint32(p.sent)*src.packetTicks
		// Stamped with when the packet is due, not when the tick ran: a
		// sender report extrapolates from it, and must land on the
		// timeline the timestamps follow, whatever the tick's lag.
		seq := p.out.next(ts, p.start.Add(time.Duration(p.sent)*every), every)
		p.buf[0] = 0x80
		writeHeaderFields(p.buf, src.pt, p.marker, seq, ts, p.out.ssrc)
		p.marker = false
		a.sendRTP(p.buf[:rtpHeaderLen+n])
	}
}
