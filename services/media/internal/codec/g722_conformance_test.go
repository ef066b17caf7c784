package codec

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// g722ConformanceInput is a deterministic, integer-only test signal (so it
// is identical on every platform): a triangle sweep, whose harmonics reach
// the higher band, plus white pseudo-random noise. Over five seconds its
// peak rises from about -22 to -4 dBFS, staying below the level where
// decoders differ in how they handle output overflow (spandsp wraps, this
// package saturates).
func g722ConformanceInput() []int16 {
	const samples = 5 * 16000
	pcm := make([]int16, samples)
	var lcg uint32 = 12345
	var triangle int32
	rising := true
	for i := range pcm {
		lcg = lcg*1664525 + 1013904223
		noise := int32(lcg>>20) - 2048 // white, ±2048
		step := int32(40 + i/200)      // fundamental sweeps 20-220 Hz
		if !rising {
			step = -step
		}
		triangle += step
		if triangle > 8000 || triangle < -8000 {
			triangle = max(-8000, min(8000, triangle))
			rising = !rising
		}
		eighths := int32(2 + 14*i/samples) // a quarter to twice the level
		pcm[i] = int16((triangle + noise) * eighths / 8)
	}
	return pcm
}

// CRC-32 (IEEE) of the codes that the spandsp 0.0.6 G.722 encoder (64
// kbit/s, unpacked) produces for g722ConformanceInput, and of the
// little-endian PCM its decoder produces from those codes. Matching them
// shows this implementation is bit-exact with a deployed one, which is what
// interoperability needs.
const (
	g722ReferenceCodesCRC = 0xf8859970
	g722ReferencePCMCRC   = 0x8bd94004
)

func TestG722MatchesReference(t *testing.T) {
	input := g722ConformanceInput()
	enc := newG722Encoder()
	codes := make([]byte, 0, len(input)/2)
	payload := make([]byte, g722FrameSamples/2)
	for start := 0; start < len(input); start += g722FrameSamples {
		n, err := enc.Encode(input[start:start+g722FrameSamples], payload)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		codes = append(codes, payload[:n]...)
	}
	if got := crc32.ChecksumIEEE(codes); got != g722ReferenceCodesCRC {
		t.Errorf("codes CRC %#08x, want %#08x", got, g722ReferenceCodesCRC)
	}

	dec := newG722Decoder()
	pcm := make([]int16, 2*len(codes))
	if _, err := dec.Decode(codes, pcm); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	raw := make([]byte, 2*len(pcm))
	for i, s := range pcm {
		binary.LittleEndian.PutUint16(raw[2*i:], uint16(s))
	}
	if got := crc32.ChecksumIEEE(raw); got != g722ReferencePCMCRC {
		t.Errorf("decoded PCM CRC %#08x, want %#08x", got, g722ReferencePCMCRC)
	}
}
