package codec

import (
	"fmt"
	"math/bits"
)

// G.711 (ITU-T G.711) companding. Encoding goes through a 64 KiB table per
// law indexed by the raw 16-bit sample, and decoding through a 256-entry
// table, so a 20 ms frame costs 160 loads each way. The tables are built
// once from the arithmetic definitions below.
var (
	ulawEncodeTable [1 << 16]uint8
	alawEncodeTable [1 << 16]uint8
	ulawDecodeTable [256]int16
	alawDecodeTable [256]int16
)

func init() {
	for i := range 1 << 16 {
		sample := int16(uint16(i))
		ulawEncodeTable[i] = ulawFromLinear(sample)
		alawEncodeTable[i] = alawFromLinear(sample)
	}
	for code := range 256 {
		ulawDecodeTable[code] = ulawToLinear(uint8(code))
		alawDecodeTable[code] = alawToLinear(uint8(code))
	}
}

// µ-law works on the magnitude plus a bias of 132 (33 in 14-bit terms), which
// makes every segment boundary a power of two.
const (
	ulawBias = 0x84
	ulawClip = 32635
)

// ulawFromLinear compands one 16-bit sample: sign, 3-bit segment, 4-bit
// mantissa, all bits inverted as G.711 transmits them.
func ulawFromLinear(sample int16) uint8 {
	mask := uint8(0xFF)
	magnitude := int32(sample)
	if magnitude < 0 {
		// One's complement, as the ITU-T G.191 reference coder does, so
		// negative decision levels mirror positive ones exactly.
		magnitude = -magnitude - 1
		mask = 0x7F
	}
	magnitude = min(magnitude, ulawClip) + ulawBias
	segment := bits.Len32(uint32(magnitude>>7)) - 1
	mantissa := (magnitude >> (segment + 3)) & 0x0F
	return uint8(int32(segment)<<4|mantissa) ^ mask
}

func ulawToLinear(code uint8) int16 {
	code = ^code
	segment := (code >> 4) & 0x07
	mantissa := int32(code & 0x0F)
	magnitude := ((mantissa<<3)+ulawBias)<<segment - ulawBias
	if code&0x80 != 0 {
		return int16(-magnitude)
	}
	return int16(magnitude)
}

// alawFromLinear compands one 16-bit sample on its 13 most significant bits.
// A-law toggles the even bits (0x55) of every code, and carries the sign in
// the top bit set for positive values.
func alawFromLinear(sample int16) uint8 {
	mask := uint8(0xD5)
	magnitude := int32(sample) >> 3
	if magnitude < 0 {
		// One's complement keeps -1 in the same interval as 0, as G.711 does.
		magnitude = -magnitude - 1
		mask = 0x55
	}
	segment := bits.Len32(uint32(magnitude >> 5))
	var mantissa int32
	if segment < 2 {
		mantissa = (magnitude >> 1) & 0x0F
	} else {
		mantissa = (magnitude >> segment) & 0x0F
	}
	return uint8(int32(segment)<<4|mantissa) ^ mask
}

func alawToLinear(code uint8) int16 {
	code ^= 0x55
	value := int32(code&0x0F)<<4 + 8
	segment := (code & 0x70) >> 4
	switch segment {
	case 0:
	case 1:
		value += 0x100
	default:
		value = (value + 0x100) << (segment - 1)
	}
	if code&0x80 != 0 {
		return int16(value)
	}
	return int16(-value)
}

// g711FrameSamples is 20 ms at 8 kHz; G.711 carries one byte per sample.
const g711FrameSamples = 160

type g711Encoder struct {
	name  Name
	table *[1 << 16]uint8
}

func newG711Encoder(name Name) *g711Encoder {
	if name == PCMA {
		return &g711Encoder{name: name, table: &alawEncodeTable}
	}
	return &g711Encoder{name: name, table: &ulawEncodeTable}
}

func (e *g711Encoder) Encode(pcm []int16, payload []byte) (int, error) {
	if len(pcm) != g711FrameSamples {
		return 0, fmt.Errorf("encode %s %d samples: %w", e.name, len(pcm), ErrFrameSize)
	}
	if len(payload) < len(pcm) {
		return 0, fmt.Errorf("encode %s into %d bytes: %w", e.name, len(payload), ErrShortBuffer)
	}
	payload = payload[:len(pcm)]
	for i, sample := range pcm {
		payload[i] = e.table[uint16(sample)]
	}
	return len(pcm), nil
}

func (e *g711Encoder) SampleRate() int { return 8000 }
func (e *g711Encoder) Name() Name      { return e.name }
func (e *g711Encoder) Close()          {}

type g711Decoder struct {
	name  Name
	table *[256]int16
	plc   concealer
	// packetSamples is the length of the last packet decoded, which a lost
	// packet is taken to share.
	packetSamples int
}

func newG711Decoder(name Name) *g711Decoder {
	d := &g711Decoder{name: name, table: &ulawDecodeTable, packetSamples: g711FrameSamples}
	if name == PCMA {
		d.table = &alawDecodeTable
	}
	d.plc.init(8000)
	return d
}

// Decode expands every byte of payload; G.711 has no framing, so any length
// is a valid payload and pcm must hold len(payload) samples.
func (d *g711Decoder) Decode(payload []byte, pcm []int16) (int, error) {
	if len(pcm) < len(payload) {
		return 0, fmt.Errorf("decode %s %d bytes into %d samples: %w", d.name, len(payload), len(pcm), ErrShortBuffer)
	}
	pcm = pcm[:len(payload)]
	for i, code := range payload {
		pcm[i] = d.table[code]
	}
	d.plc.remember(pcm)
	if len(payload) > 0 {
		d.packetSamples = len(payload)
	}
	return len(payload), nil
}

// DecodeLost ignores next: G.711 carries no redundancy to recover from.
func (d *g711Decoder) DecodeLost(_ []byte, pcm []int16) (int, error) {
	n := d.packetSamples
	if len(pcm) < n {
		return 0, fmt.Errorf("conceal %s %d samples into %d: %w", d.name, n, len(pcm), ErrShortBuffer)
	}
	d.plc.conceal(pcm[:n])
	return n, nil
}

func (d *g711Decoder) SampleRate() int { return 8000 }
func (d *g711Decoder) Name() Name      { return d.name }
func (d *g711Decoder) Close()          {}
