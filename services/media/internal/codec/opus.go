package codec

import (
	"errors"
	"fmt"

	"github.com/hraban/opus"
)

// OpusMaxPacketBytes bounds what one 20 ms Opus frame can occupy (RFC 6716
// allows 1275 bytes per frame); callers sizing payload buffers can use it.
const OpusMaxPacketBytes = 1275

// validOpusRate reports whether the media node runs Opus at rate. libopus
// also supports 12 and 24 kHz, but nothing else in the node produces them.
func validOpusRate(rate int) bool {
	return rate == 8000 || rate == 16000 || rate == 48000
}

// opusMaxBitrateMono is the highest bitrate libopus runs a mono encoder at:
// OPUS_SET_BITRATE clamps anything above 300 kbit/s per channel, so the
// 510 kbit/s RFC 6716 quotes is reachable only in stereo.
const opusMaxBitrateMono = 300000

// validate rejects options libopus would refuse or silently change, naming
// the field.
func (o OpusOptions) validate() error {
	switch {
	case o.Complexity < 0 || o.Complexity > 10:
		return fmt.Errorf("opus complexity %d outside 0-10", o.Complexity)
	case o.BitrateBPS < 6000 || o.BitrateBPS > opusMaxBitrateMono:
		return fmt.Errorf("opus bitrate %d bps outside 6000-%d", o.BitrateBPS, opusMaxBitrateMono)
	case o.PacketLossPercent < 0 || o.PacketLossPercent > 100:
		return fmt.Errorf("opus packet loss %d%% outside 0-100", o.PacketLossPercent)
	case o.MaxPlaybackRateHz != 0 && (o.MaxPlaybackRateHz < 8000 || o.MaxPlaybackRateHz > 48000):
		return fmt.Errorf("opus max playback rate %d Hz outside 8000-48000", o.MaxPlaybackRateHz)
	}
	return nil
}

type opusEncoder struct {
	enc          *opus.Encoder
	rate         int
	frameSamples int
}

func newOpusEncoder(rate int, opts OpusOptions) (*opusEncoder, error) {
	if !validOpusRate(rate) {
		return nil, fmt.Errorf("new opus encoder at %d Hz: %w", rate, ErrUnsupported)
	}
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("new opus encoder: %w", err)
	}
	enc, err := opus.NewEncoder(rate, 1, opus.AppVoIP)
	if err != nil {
		return nil, fmt.Errorf("new opus encoder at %d Hz: %w", rate, err)
	}
	if err := configure(enc, opts); err != nil {
		return nil, err
	}
	return &opusEncoder{enc: enc, rate: rate, frameSamples: FrameSamplesAt(rate)}, nil
}

// configure sets every knob of opts on enc, even one that matches the
// libopus default, so a library upgrade cannot silently change what goes
// on the wire. Each is an encoder ctl that takes effect from the next
// frame, on a new encoder or one that has been running.
func configure(enc *opus.Encoder, opts OpusOptions) error {
	settings := []struct {
		what string
		set  func() error
	}{
		{"complexity", func() error { return enc.SetComplexity(opts.Complexity) }},
		{"bitrate", func() error { return enc.SetBitrate(opts.BitrateBPS) }},
		{"inband fec", func() error { return enc.SetInBandFEC(opts.FEC) }},
		{"packet loss", func() error { return enc.SetPacketLossPerc(opts.PacketLossPercent) }},
		{"dtx", func() error { return enc.SetDTX(opts.DTX) }},
		{"vbr", func() error { return enc.SetVBR(!opts.CBR) }},
		{"max bandwidth", func() error { return enc.SetMaxBandwidth(maxBandwidth(opts.MaxPlaybackRateHz)) }},
	}
	for _, s := range settings {
		if err := s.set(); err != nil {
			return fmt.Errorf("set opus %s: %w", s.what, err)
		}
	}
	return nil
}

// Reconfigure makes the encoder run as opts say from its next frame on,
// keeping its state: a receiver's new fmtp (RFC 7587 lets a re-INVITE
// change it) then costs no new encoder and no restart of the stream.
// Options out of range are refused before any setting is changed.
func (e *opusEncoder) Reconfigure(opts OpusOptions) error {
	if e.enc == nil {
		return ErrClosed
	}
	if err := opts.validate(); err != nil {
		return fmt.Errorf("reconfigure opus encoder: %w", err)
	}
	if err := configure(e.enc, opts); err != nil {
		return fmt.Errorf("reconfigure opus encoder: %w", err)
	}
	return nil
}

// Encode writes one Opus packet. With DTX on, libopus may return a packet of
// one or two bytes during silence; the caller may send or skip it.
func (e *opusEncoder) Encode(pcm []int16, payload []byte) (int, error) {
	if e.enc == nil {
		return 0, ErrClosed
	}
	if len(pcm) != e.frameSamples {
		return 0, fmt.Errorf("encode opus %d samples at %d Hz: %w", len(pcm), e.rate, ErrFrameSize)
	}
	if len(payload) == 0 {
		return 0, fmt.Errorf("encode opus into empty payload: %w", ErrShortBuffer)
	}
	// libopus writes up to cap(payload); limiting the capacity keeps it
	// inside what the caller handed over.
	n, err := e.enc.Encode(pcm, payload[:len(payload):len(payload)])
	if errors.Is(err, opus.ErrBufferTooSmall) {
		return 0, fmt.Errorf("encode opus into %d bytes: %w", len(payload), ErrShortBuffer)
	}
	if err != nil {
		return 0, fmt.Errorf("encode opus: %w", err)
	}
	return n, nil
}

func (e *opusEncoder) SampleRate() int { return e.rate }
func (e *opusEncoder) Name() Name      { return Opus }

// Close releases the encoder state (it lives in Go memory, so the collector
// frees it); later calls return ErrClosed.
func (e *opusEncoder) Close() { e.enc = nil }

type opusDecoder struct {
	dec  *opus.Decoder
	rate int
	// packetSamples is the duration of the last packet decoded or
	// concealed, which a lost packet is taken to share.
	packetSamples int
}

func newOpusDecoder(rate int) (*opusDecoder, error) {
	if !validOpusRate(rate) {
		return nil, fmt.Errorf("new opus decoder at %d Hz: %w", rate, ErrUnsupported)
	}
	dec, err := opus.NewDecoder(rate, 1)
	if err != nil {
		return nil, fmt.Errorf("new opus decoder at %d Hz: %w", rate, err)
	}
	return &opusDecoder{dec: dec, rate: rate, packetSamples: FrameSamplesAt(rate)}, nil
}

// Decode decodes one packet of any duration Opus allows, as long as pcm can
// hold it (120 ms at most).
func (d *opusDecoder) Decode(payload []byte, pcm []int16) (int, error) {
	if d.dec == nil {
		return 0, ErrClosed
	}
	if len(payload) == 0 {
		return 0, fmt.Errorf("decode empty opus payload: %w", ErrShortBuffer)
	}
	if len(pcm) == 0 {
		return 0, fmt.Errorf("decode opus into empty pcm: %w", ErrShortBuffer)
	}
	// libopus writes up to cap(pcm); see Encode.
	n, err := d.dec.Decode(payload, pcm[:len(pcm):len(pcm)])
	if errors.Is(err, opus.ErrBufferTooSmall) {
		return 0, fmt.Errorf("decode opus into %d samples: %w", len(pcm), ErrShortBuffer)
	}
	if err != nil {
		return 0, fmt.Errorf("decode opus: %w", err)
	}
	d.packetSamples = n
	return n, nil
}

// DecodeLost recovers the packet before next from its in-band FEC data when
// next is given (libopus falls back to PLC if next carries none), and
// otherwise extrapolates with PLC.
func (d *opusDecoder) DecodeLost(next []byte, pcm []int16) (int, error) {
	if d.dec == nil {
		return 0, ErrClosed
	}
	// libopus conceals exactly as many samples as the buffer holds, and
	// that must be the missing duration: a shorter buffer makes it skip
	// the FEC data of a longer frame and leaves the decoder out of step
	// with the stream, a longer one invents audio that was never sent.
	n := d.packetSamples
	if len(pcm) < n {
		return 0, fmt.Errorf("conceal opus %d samples into %d: %w", n, len(pcm), ErrShortBuffer)
	}
	frame := pcm[:n:n]
	if len(next) > 0 && d.dec.DecodeFEC(next, frame) == nil {
		return n, nil
	}
	// A next packet that does not parse holds no usable redundancy, and
	// libopus rejects it before touching its state: conceal as if none
	// had come rather than leave a hole.
	if err := d.dec.DecodePLC(frame); err != nil {
		return 0, fmt.Errorf("conceal opus frame: %w", err)
	}
	return n, nil
}

func (d *opusDecoder) SampleRate() int { return d.rate }
func (d *opusDecoder) Name() Name      { return Opus }

// Close drops the decoder; see opusEncoder.Close.
func (d *opusDecoder) Close() { d.dec = nil }
