package engine

import (
	"fmt"
	"time"

	"callgrid.dev/services/media/internal/codec"
)

const (
	// samplePacketStep is the granularity of a sample-based codec's packet
	// time: G.711 and G.722 could be cut at any sample, but endpoints ask
	// for, and jitter buffers expect, whole 10 ms.
	samplePacketStep = 10 * time.Millisecond
	// maxSamplePacketTime is the longest sample-based packet the node
	// sends: 150 ms of G.711 (1200 octets) with its RTP, UDP and IPv6
	// headers fits the 1280-byte minimum IPv6 MTU, so no path fragments it.
	maxSamplePacketTime = 150 * time.Millisecond
	// maxOpusPacketTime is the longest Opus packet the node sends (three
	// 20 ms frames): the longest frame Opus codes in one piece, and the
	// longest packet time endpoints ask of it.
	maxOpusPacketTime = 60 * time.Millisecond
	// maxOpusPacketFrames is how many 20 ms frames such a packet holds.
	maxOpusPacketFrames = int(maxOpusPacketTime / frameDuration)
)

// packetTimeFor is the packet time the node sends media it encodes itself
// (the tone, transcoded audio) at to an endpoint: what the endpoint asked
// for (a=ptime, in ms, 0 when it did not) when the codec can carry it and
// it is within the endpoint's a=maxptime (ms, 0 for none); else the 20 ms
// every endpoint takes, or, when the endpoint's maxptime is shorter, the
// longest packet the codec carries within it.
func packetTimeFor(info codec.Info, ptimeMs, maxPtimeMs int) time.Duration {
	limit := time.Duration(maxPtimeMs) * time.Millisecond
	within := func(d time.Duration) bool { return maxPtimeMs <= 0 || d <= limit }
	if asked := time.Duration(ptimeMs) * time.Millisecond; ptimeMs > 0 && packetizable(info, asked) && within(asked) {
		return asked
	}
	if within(frameDuration) {
		return frameDuration
	}
	for d := limit; d > 0; d -= time.Millisecond {
		if packetizable(info, d) {
			return d
		}
	}
	return frameDuration
}

// packetizable reports whether the node can send media it encodes in
// packets of d in the codec. G.711 and G.722 code an octet per clock tick,
// so their stream can be cut anywhere: whole 10 ms up to
// maxSamplePacketTime. The codec package encodes Opus in 20 ms frames, and
// RFC 6716 §3.2 packs several frames in a packet: 20, 40 or 60 ms. A 10 ms
// Opus packet needs a 10 ms encoder, which the codec package does not
// make, so it is not carried.
func packetizable(info codec.Info, d time.Duration) bool {
	if info.Name == codec.Opus {
		return d >= frameDuration && d <= maxOpusPacketTime && d%frameDuration == 0
	}
	return d >= samplePacketStep && d <= maxSamplePacketTime && d%samplePacketStep == 0
}

// packetizer gathers the 20 ms frames an encoder makes into packets of the
// packet time an endpoint asked for. A sample-based codec's frames are a
// stream of octets, one per clock tick, that packets are cut from; Opus
// frames are kept whole and packed several to a packet (RFC 6716 §3.2.5).
// The frames queued are consecutive: whoever adds one that does not follow
// on resets the queue first. It is owned by the goroutine that encodes.
type packetizer struct {
	opus        bool
	clock       int    // RTP clock, Hz
	frameTicks  uint32 // one 20 ms frame in clock ticks
	packetTicks uint32 // one packet in clock ticks

	buf    []byte // the frames queued, back to back
	queued int    // bytes of buf they take
	// Opus: how many frames are queued, where each ends in buf, and the
	// frames of a packet being packed.
	frames    int
	frameEnds [maxOpusPacketFrames]int
	packing   [maxOpusPacketFrames][]byte
	ts        uint32 // timestamp of the first frame queued
}

// newPacketizer makes a packetizer for the codec, at first at 20 ms. Its
// buffer takes the longest packet any packet time makes and the frame that
// completes it, or all the frames of the longest Opus packet: anything
// more would not fit the datagram it goes in. Packets shorter than a
// frame, which a transcoder paces, take what a source datagram held, or
// nearly: the transcoder sends them early rather than overflow it
// (transcoder.makeRoom).
func newPacketizer(info codec.Info) *packetizer {
	p := &packetizer{
		opus:       info.Name == codec.Opus,
		clock:      info.ClockRate,
		frameTicks: info.TimestampStep(),
		buf:        make([]byte, maxPacket),
	}
	p.setPacketTime(frameDuration)
	return p
}

// setPacketTime makes the packets from here on last every, which
// packetizable must allow. What is queued stays, and goes out in the new
// packets.
func (p *packetizer) setPacketTime(every time.Duration) {
	p.packetTicks = p.ticks(every)
}

// ticks is d in clock ticks.
func (p *packetizer) ticks(d time.Duration) uint32 {
	return uint32(int64(p.clock) * int64(d) / int64(time.Second))
}

// duration is n clock ticks as a time.
func (p *packetizer) duration(n uint32) time.Duration {
	return time.Duration(n) * time.Second / time.Duration(p.clock)
}

// space is where the next frame is to be encoded.
func (p *packetizer) space() []byte {
	if p.opus && p.frames == len(p.frameEnds) {
		return nil // a full packet waits to be taken
	}
	return p.buf[p.queued:]
}

// add queues the n bytes just encoded into space, a frame whose first
// sample is at timestamp ts (for the first frame of the queue: those after
// it follow on).
func (p *packetizer) add(n int, ts uint32) {
	if p.queued == 0 {
		p.ts = ts
	}
	p.queued += n
	if p.opus {
		p.frameEnds[p.frames] = p.queued
		p.frames++
	}
}

// pending reports whether anything is queued.
func (p *packetizer) pending() bool { return p.queued > 0 }

// queuedTicks is how long what is queued lasts, in clock ticks.
func (p *packetizer) queuedTicks() uint32 {
	if p.opus {
		return uint32(p.frames) * p.frameTicks
	}
	return uint32(p.queued)
}

// readyTicks is how long the whole packets queued last, in clock ticks:
// what is queued but the start of a packet yet to be completed.
func (p *packetizer) readyTicks() uint32 {
	q := p.queuedTicks()
	return q - q%p.packetTicks
}

// ready reports whether a whole packet is queued.
func (p *packetizer) ready() bool { return p.queuedTicks() >= p.packetTicks }

// reset drops what is queued.
func (p *packetizer) reset() { p.queued, p.frames = 0, 0 }

// next writes the next packet's payload into out, from what is queued: a
// whole packet when ready, else what there is (a stream cut short). It
// returns the payload's length, timestamp and duration in clock ticks.
// Opus frames of different configurations cannot share a packet: those
// that share the first's go, and the rest lead the next packet.
func (p *packetizer) next(out []byte) (n int, ts, ticks uint32, err error) {
	if !p.pending() {
		return 0, 0, 0, nil
	}
	ts = p.ts
	if p.opus {
		n, ticks, err = p.nextOpus(out)
	} else {
		n, ticks, err = p.nextOctets(out)
	}
	if err != nil {
		p.reset()
		return 0, ts, 0, err
	}
	p.ts += ticks
	return n, ts, ticks, nil
}

// nextOctets cuts the next packet off the octet stream.
func (p *packetizer) nextOctets(out []byte) (int, uint32, error) {
	size := min(p.queued, int(p.packetTicks))
	if size > len(out) {
		return 0, 0, fmt.Errorf("packet of %d octets into %d: %w", size, len(out), codec.ErrShortBuffer)
	}
	copy(out, p.buf[:size])
	p.consume(size)
	return size, uint32(size), nil
}

// nextOpus packs the next packet's frames.
func (p *packetizer) nextOpus(out []byte) (int, uint32, error) {
	count := min(p.frames, int(p.packetTicks/p.frameTicks))
	frames := p.packing[:0]
	start := 0
	for i := range count {
		frame := p.buf[start:p.frameEnds[i]]
		if i > 0 && !sameOpusConfiguration(frame, frames[0]) {
			break
		}
		frames = append(frames, frame)
		start = p.frameEnds[i]
	}
	var n int
	if len(frames) == 1 {
		// One frame is the packet the encoder made, as it made it.
		if len(frames[0]) > len(out) {
			return 0, 0, fmt.Errorf("opus packet of %d bytes into %d: %w", len(frames[0]), len(out), codec.ErrShortBuffer)
		}
		n = copy(out, frames[0])
	} else {
		var err error
		if n, err = packOpusFrames(out, frames); err != nil {
			return 0, 0, err
		}
	}
	p.consumeFrames(len(frames), start)
	return n, uint32(len(frames)) * p.frameTicks, nil
}

// discard drops the next packet's worth without sending it.
func (p *packetizer) discard() {
	if p.opus {
		count := min(p.frames, int(p.packetTicks/p.frameTicks))
		if count > 0 {
			p.consumeFrames(count, p.frameEnds[count-1])
		}
		p.ts += uint32(count) * p.frameTicks
		return
	}
	size := min(p.queued, int(p.packetTicks))
	p.consume(size)
	p.ts += uint32(size)
}

// consume takes size octets off the front of the queue.
func (p *packetizer) consume(size int) {
	p.queued = copy(p.buf, p.buf[size:p.queued])
}

// consumeFrames takes count Opus frames, size bytes, off the front.
func (p *packetizer) consumeFrames(count, size int) {
	p.queued = copy(p.buf, p.buf[size:p.queued])
	copy(p.frameEnds[:], p.frameEnds[count:p.frames])
	p.frames -= count
	for i := range p.frames {
		p.frameEnds[i] -= size
	}
}
