// Package codec encodes and decodes the audio codecs the media node offers in
// SDP (G.711 µ-law and A-law, Opus and G.722) and converts PCM between the
// sample rates those codecs work at.
//
// Every encoder works on one 20 ms frame of mono int16 PCM at a time, every
// decoder on one packet of whatever duration the peer sends, and both write
// into caller-owned buffers, so a steady call allocates nothing per packet.
package codec

import (
	"errors"
	"fmt"
	"strings"
)

// Name identifies a codec as it appears in SDP rtpmap (case-insensitive
// there; canonical here).
type Name string

// Codec names in their canonical SDP spelling.
const (
	PCMU Name = "PCMU"
	PCMA Name = "PCMA"
	Opus Name = "opus"
	G722 Name = "G722"
)

// FrameDuration is the packetisation time every encoder and decoder here
// works at, in milliseconds: the ptime nearly every SIP endpoint uses.
const FrameDuration = 20

// DynamicPT is the StaticPT of codecs that have no static RTP payload type
// and must be given one from 96-127 in SDP.
const DynamicPT = -1

// Info describes a codec's RTP properties.
type Info struct {
	// Name is the canonical rtpmap encoding name.
	Name Name
	// ClockRate is the RTP timestamp clock in Hz (what rtpmap states).
	ClockRate int
	// SampleRate is the PCM rate the codec works at natively, in Hz.
	SampleRate int
	// Channels is the rtpmap channel count (opus is always 2 in SDP even
	// though the media node encodes mono).
	Channels int
	// StaticPT is the RFC 3551 payload type, or DynamicPT.
	StaticPT int
	// FrameSamples is the number of samples in 20 ms at SampleRate.
	FrameSamples int
}

// FrameSamplesAt returns the number of samples in one 20 ms frame at
// sampleRate.
func FrameSamplesAt(sampleRate int) int { return sampleRate * FrameDuration / 1000 }

// TimestampStep is how far the RTP timestamp advances per 20 ms frame.
func (i Info) TimestampStep() uint32 { return uint32(FrameSamplesAt(i.ClockRate)) }

// ErrUnsupported is wrapped by NewEncoder and NewDecoder when a codec or
// sample rate is not available in this build.
var ErrUnsupported = errors.New("codec: unsupported")

// ErrShortBuffer is wrapped when a caller's payload or PCM buffer cannot hold
// one frame.
var ErrShortBuffer = errors.New("codec: buffer too short")

// ErrFrameSize is wrapped when Encode is given anything but exactly one 20 ms
// frame of PCM.
var ErrFrameSize = errors.New("codec: pcm is not one 20 ms frame")

// ErrClosed is returned by an Encoder or Decoder used after Close.
var ErrClosed = errors.New("codec: closed")

// Encoder turns 20 ms of PCM (mono int16 at the encoder's sample rate) into
// one RTP payload. It returns the number of payload bytes written.
type Encoder interface {
	Encode(pcm []int16, payload []byte) (int, error)
	SampleRate() int
	Name() Name
	Close()
}

// Reconfigurer is an Encoder whose settings can change while it runs
// (Opus): the next frame is encoded as opts say, with the state built up
// so far kept. Encoders that take no options (G.711, G.722) do not
// implement it. Like Encode, it is not safe to call concurrently with the
// encoder's other methods.
type Reconfigurer interface {
	Reconfigure(opts OpusOptions) error
}

// Reconfigure sets opts on enc when it is a Reconfigurer; an encoder that
// takes no options is left as it is.
func Reconfigure(enc Encoder, opts OpusOptions) error {
	if r, ok := enc.(Reconfigurer); ok {
		return r.Reconfigure(opts)
	}
	return nil
}

// Decoder turns one RTP payload into PCM; DecodeLost conceals one missing
// payload (PLC, or FEC from next payload for Opus), taken to last as long as
// the last one decoded, or 20 ms before any was: a stream keeps its
// packetisation time, and the caller advances its clock by one packet per
// loss. Both return the number of samples written, and fail with
// ErrShortBuffer if pcm cannot hold them.
type Decoder interface {
	Decode(payload []byte, pcm []int16) (int, error)
	DecodeLost(next []byte, pcm []int16) (int, error)
	SampleRate() int
	Name() Name
	Close()
}

// Opus encoder defaults, chosen for narrowband-to-wideband telephony over
// lossy networks.
const (
	// DefaultOpusComplexity trades CPU for quality (0-10); 5 keeps a 2-core
	// media node able to transcode many calls.
	DefaultOpusComplexity = 5
	// DefaultOpusBitrateBPS is enough for wideband speech with FEC overhead.
	DefaultOpusBitrateBPS = 24000
	// DefaultOpusFEC enables in-band forward error correction.
	DefaultOpusFEC = true
	// DefaultOpusPacketLossPercent is the loss the encoder plans FEC for.
	DefaultOpusPacketLossPercent = 10
	// DefaultOpusDTX leaves discontinuous transmission off, because many
	// gateways treat silence gaps as a dead stream.
	DefaultOpusDTX = false
)

// OpusOptions tunes the Opus encoder. Every field is applied explicitly, so
// libopus defaults never leak in.
type OpusOptions struct {
	// Complexity is 0 (cheapest) to 10 (best).
	Complexity int
	// BitrateBPS is the target bitrate in bits per second.
	BitrateBPS int
	// FEC turns on in-band forward error correction.
	FEC bool
	// PacketLossPercent is the expected loss (0-100) that sizes FEC.
	PacketLossPercent int
	// DTX turns on discontinuous transmission during silence.
	DTX bool
	// CBR encodes at a constant bitrate instead of a variable one.
	CBR bool
	// MaxPlaybackRateHz caps the audio bandwidth encoded to what a
	// receiver playing at this rate can render (8000-48000); 0 for no
	// cap beyond the encoder's sample rate.
	MaxPlaybackRateHz int
}

// DefaultOpusOptions returns the documented defaults.
func DefaultOpusOptions() OpusOptions {
	return OpusOptions{
		Complexity:        DefaultOpusComplexity,
		BitrateBPS:        DefaultOpusBitrateBPS,
		FEC:               DefaultOpusFEC,
		PacketLossPercent: DefaultOpusPacketLossPercent,
		DTX:               DefaultOpusDTX,
	}
}

// catalogue lists every codec the package knows, in order of preference for
// an offer: wideband first, then the G.711 pair every endpoint speaks.
var catalogue = []Info{
	{Name: Opus, ClockRate: 48000, SampleRate: 48000, Channels: 2, StaticPT: DynamicPT, FrameSamples: 960},
	{Name: G722, ClockRate: 8000, SampleRate: 16000, Channels: 1, StaticPT: 9, FrameSamples: 320},
	{Name: PCMU, ClockRate: 8000, SampleRate: 8000, Channels: 1, StaticPT: 0, FrameSamples: 160},
	{Name: PCMA, ClockRate: 8000, SampleRate: 8000, Channels: 1, StaticPT: 8, FrameSamples: 160},
}

// Lookup finds a codec by its rtpmap encoding name, ignoring case.
func Lookup(name string) (Info, bool) {
	for _, info := range catalogue {
		if strings.EqualFold(string(info.Name), name) {
			return info, true
		}
	}
	return Info{}, false
}

// Supported returns the codecs this build can encode and decode, in order of
// preference. The slice is a copy the caller may keep.
func Supported() []Info {
	out := make([]Info, 0, len(catalogue))
	for _, info := range catalogue {
		if available(info.Name) {
			out = append(out, info)
		}
	}
	return out
}

// NewEncoder builds an encoder. Opus accepts sampleRate 8000, 16000 or 48000
// (mono); G.711 only 8000; G.722 only 16000. opus is ignored by other codecs.
func NewEncoder(name Name, sampleRate int, opus OpusOptions) (Encoder, error) {
	switch canonical(name) {
	case PCMU, PCMA:
		if sampleRate != 8000 {
			return nil, fmt.Errorf("new %s encoder at %d Hz: %w", name, sampleRate, ErrUnsupported)
		}
		return newG711Encoder(canonical(name)), nil
	case G722:
		if sampleRate != 16000 {
			return nil, fmt.Errorf("new %s encoder at %d Hz: %w", name, sampleRate, ErrUnsupported)
		}
		return newG722Encoder(), nil
	case Opus:
		return newOpusEncoder(sampleRate, opus)
	}
	return nil, fmt.Errorf("new encoder %q: %w", name, ErrUnsupported)
}

// NewDecoder builds a decoder producing PCM at sampleRate, with the same rate
// rules as NewEncoder.
func NewDecoder(name Name, sampleRate int) (Decoder, error) {
	switch canonical(name) {
	case PCMU, PCMA:
		if sampleRate != 8000 {
			return nil, fmt.Errorf("new %s decoder at %d Hz: %w", name, sampleRate, ErrUnsupported)
		}
		return newG711Decoder(canonical(name)), nil
	case G722:
		if sampleRate != 16000 {
			return nil, fmt.Errorf("new %s decoder at %d Hz: %w", name, sampleRate, ErrUnsupported)
		}
		return newG722Decoder(), nil
	case Opus:
		return newOpusDecoder(sampleRate)
	}
	return nil, fmt.Errorf("new decoder %q: %w", name, ErrUnsupported)
}

// canonical maps any spelling of a known codec to its canonical Name, and
// leaves unknown names as they are.
func canonical(name Name) Name {
	if info, ok := Lookup(string(name)); ok {
		return info.Name
	}
	return name
}

// available reports whether this build can encode and decode name.
func available(name Name) bool {
	switch name {
	case PCMU, PCMA, Opus, G722:
		return true
	}
	return false
}
