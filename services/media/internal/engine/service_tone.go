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

	// samplePacketStep is the granularity of a sample-based codec's packet
	// time: G.711 and G.722 could be cut at any sample, but endpoints ask
	// for, and jitter buffers expect, whole 10 ms.
	samplePacketStep = 10 * time.Millisecond
	// maxSamplePacketTime is the longest sample-based packet the tone is
	// sent in: 150 ms of G.711 (1200 octets) with its RTP, UDP and IPv6
	// headers fits the 1280-byte minimum IPv6 MTU, so no path fragments it.
	maxSamplePacketTime = 150 * time.Millisecond
	// maxOpusPacketTime is the longest Opus packet the tone is sent in
	// (three 20 ms frames): the longest frame Opus codes in one piece, and
	// the longest packet time endpoints ask of it.
	maxOpusPacketTime = 60 * time.Millisecond
)

// tonePacketTime is the packet time the tone is sent at: what the caller
// asked for (a=ptime, in ms, 0 when it did not) when the codec can carry
// it and it is within the caller's a=maxptime (ms, 0 for none); else the
// 20 ms every endpoint takes, or, when the caller's maxptime is shorter,
// the longest packet the codec carries within it.
func tonePacketTime(info codec.Info, ptimeMs, maxPtimeMs int) time.Duration {
	limit := time.Duration(maxPtimeMs) * time.Millisecond
	within := func(d time.Duration) bool { return maxPtimeMs <= 0 || d <= limit }
	if asked := time.Duration(ptimeMs) * time.Millisecond; ptimeMs > 0 && toneCarries(info, asked) && within(asked) {
		return asked
	}
	if within(frameDuration) {
		return frameDuration
	}
	for d := limit; d > 0; d -= time.Millisecond {
		if toneCarries(info, d) {
			return d
		}
	}
	return frameDuration
}

// toneCarries reports whether the tone can go out in packets of d in the
// codec. G.711 and G.722 code an octet per clock tick, so their stream can
// be cut anywhere: whole 10 ms up to maxSamplePacketTime. The codec package
// encodes Opus in 20 ms frames, and RFC 6716 §3.2 packs several frames in a
// packet: 20, 40 or 60 ms. A 10 ms Opus packet needs a 10 ms encoder, which
// the codec package does not make, so it is not carried.
func toneCarries(info codec.Info, d time.Duration) bool {
	if info.Name == codec.Opus {
		return d >= frameDuration && d <= maxOpusPacketTime && d%frameDuration == 0
	}
	return d >= samplePacketStep && d <= maxSamplePacketTime && d%samplePacketStep == 0
}

// toneSource encodes a continuous tone in the caller's codec, one packet of
// the negotiated packet time at a time.
type toneSource struct {
	info        codec.Info
	pt          uint8
	enc         codec.Encoder
	gen         *dsp.Tone
	pcm         []int16       // one 20 ms frame, what the encoder takes
	packetTime  time.Duration // what each packet holds
	packetTicks uint32        // the same in RTP clock ticks

	// Sample-based codecs: octets encoded and not yet sent, in order.
	octets []byte
	queued int
	// Opus: a buffer for each 20 ms frame of a packet, and the frames
	// encoded into them.
	frameBufs [][]byte
	frames    [][]byte
}

// newToneSource builds the generator of packets every long, a length that
// toneCarries. Opus is encoded from 8 kHz PCM: a 1 kHz tone needs no more,
// and it is the cheapest rate to encode.
func newToneSource(info codec.Info, pt uint8, every time.Duration, opus codec.OpusOptions) (*toneSource, error) {
	if !toneCarries(info, every) {
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
	t := &toneSource{
		info:        info,
		pt:          pt,
		enc:         enc,
		gen:         dsp.NewTone(ToneHz, float64(rate), dsp.AmplitudeFromDBFS(toneLevelDBFS)),
		pcm:         make([]int16, codec.FrameSamplesAt(rate)),
		packetTime:  every,
		packetTicks: uint32(int64(info.ClockRate) * int64(every) / int64(time.Second)),
	}
	if info.Name == codec.Opus {
		for range every / frameDuration {
			t.frameBufs = append(t.frameBufs, make([]byte, codec.OpusMaxPacketBytes))
		}
		t.frames = make([][]byte, 0, len(t.frameBufs))
	} else {
		// Room for a packet's worth and the frame that completes it.
		t.octets = make([]byte, int(t.packetTicks)+int(info.TimestampStep()))
	}
	return t, nil
}

func (t *toneSource) close() { t.enc.Close() }

// packet writes the next packet's payload into out and returns its length.
func (t *toneSource) packet(out []byte) (int, error) {
	if t.info.Name == codec.Opus {
		return t.opusPacket(out)
	}
	return t.samplePacket(out)
}

// skip moves the tone on by one packet that is not sent, keeping its phase
// and timing running (the caller is on hold). Opus frames are not encoded
// for it: they are what the tone costs. A sample-based stream is cut at
// any octet, so the packet skipped is encoded like any other, which costs
// next to nothing.
func (t *toneSource) skip() {
	if t.info.Name == codec.Opus {
		for range t.frameBufs {
			t.gen.Fill(t.pcm)
		}
		return
	}
	if t.queueOctets() == nil {
		t.consumeOctets()
	}
}

// samplePacket cuts the next packet from the encoded octet stream of a
// sample-based codec: an octet per clock tick.
func (t *toneSource) samplePacket(out []byte) (int, error) {
	if err := t.queueOctets(); err != nil {
		return 0, err
	}
	n := copy(out, t.octets[:t.packetTicks])
	t.consumeOctets()
	if n < int(t.packetTicks) {
		return 0, fmt.Errorf("tone packet of %d octets into %d: %w", t.packetTicks, len(out), codec.ErrShortBuffer)
	}
	return n, nil
}

// queueOctets encodes 20 ms frames until a packet's worth is queued.
func (t *toneSource) queueOctets() error {
	for t.queued < int(t.packetTicks) {
		t.gen.Fill(t.pcm)
		n, err := t.enc.Encode(t.pcm, t.octets[t.queued:])
		if err != nil {
			return fmt.Errorf("encode tone: %w", err)
		}
		t.queued += n
	}
	return nil
}

// consumeOctets takes a packet's worth off the queue.
func (t *toneSource) consumeOctets() {
	t.queued = copy(t.octets, t.octets[t.packetTicks:t.queued])
}

// opusPacket encodes the next packet's frames and packs them in one packet.
func (t *toneSource) opusPacket(out []byte) (int, error) {
	if len(t.frameBufs) == 1 {
		// The 20 ms default: the encoder's packet as it makes it.
		t.gen.Fill(t.pcm)
		n, err := t.enc.Encode(t.pcm, out)
		if err != nil {
			return 0, fmt.Errorf("encode tone: %w", err)
		}
		return n, nil
	}
	t.frames = t.frames[:0]
	for _, buf := range t.frameBufs {
		t.gen.Fill(t.pcm)
		n, err := t.enc.Encode(t.pcm, buf)
		if err != nil {
			return 0, fmt.Errorf("encode tone: %w", err)
		}
		t.frames = append(t.frames, buf[:n])
	}
	return packOpusFrames(out, t.frames)
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
	src    *toneSource
	out    outStream
	buf    []byte
	start  time.Time
	baseTS uint32
	sent   int
	marker bool
	// checked is the caller's SSRC last checked against the tone's.
	checked uint32
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

// tick sends the packets due by now.
func (p *tonePlayer) tick(s *session, now time.Time) {
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
	if remote := a.remoteSSRC.Load(); remote != p.checked {
		// The leg's reader notes the caller's SSRC; the tone's stream is
		// this goroutine's to renumber.
		p.checked = remote
		s.avoidCollision(a, &p.out, remote, a.rtpSource(), now)
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
		seq := p.out.next(ts, p.start.Add(time.Duration(p.sent)*every))
		p.buf[0] = 0x80
		writeHeaderFields(p.buf, src.pt, p.marker, seq, ts, p.out.ssrc)
		p.marker = false
		a.sendRTP(p.buf[:rtpHeaderLen+n])
	}
}
