package codec

import "fmt"

// G.722 (ITU-T G.722) at 64 kbit/s: a QMF splits 16 kHz PCM into two 8 kHz
// sub-bands, the lower coded with 6-bit and the higher with 2-bit ADPCM, and
// each octet carries one sample pair (higher band in the top two bits, as
// RFC 3551 requires). The RTP clock is 8000 Hz for historical reasons while
// the audio is 16 kHz.

// g722FrameSamples is 20 ms at 16 kHz; a frame encodes to half as many bytes.
const g722FrameSamples = 320

// g722Encoder holds the state of the transmit QMF and both ADPCM coders.
type g722Encoder struct {
	// qmf holds the last 24 input samples, oldest first.
	qmf        [24]int32
	low, high  g722Band
	frameBytes int
}

func newG722Encoder() *g722Encoder {
	e := &g722Encoder{frameBytes: g722FrameSamples / 2}
	e.low.reset(g722LowScaleInit)
	e.high.reset(g722HighScaleInit)
	return e
}

func (e *g722Encoder) Encode(pcm []int16, payload []byte) (int, error) {
	if len(pcm) != g722FrameSamples {
		return 0, fmt.Errorf("encode G722 %d samples: %w", len(pcm), ErrFrameSize)
	}
	if len(payload) < e.frameBytes {
		return 0, fmt.Errorf("encode G722 into %d bytes: %w", len(payload), ErrShortBuffer)
	}
	for i := range e.frameBytes {
		xLow, xHigh := e.split(int32(pcm[2*i]), int32(pcm[2*i+1]))
		payload[i] = byte(e.encodeHigh(xHigh)<<6 | e.encodeLow(xLow))
	}
	return e.frameBytes, nil
}

// split runs the transmit QMF on one input pair and returns the lower and
// higher sub-band samples (about half the input amplitude, 15-bit range).
func (e *g722Encoder) split(older, newer int32) (int32, int32) {
	copy(e.qmf[:22], e.qmf[2:])
	e.qmf[22], e.qmf[23] = older, newer
	// even carries the taps at even delays from the newest sample, odd
	// those at odd delays; their sum and difference are the two bands.
	var even, odd int32
	for i := 0; i < 24; i += 2 {
		odd += e.qmf[i] * g722QMF[i]
		even += e.qmf[i+1] * g722QMF[i+1]
	}
	return (even + odd) >> 14, (even - odd) >> 14
}

// encodeLow runs blocks 1L-4L on one lower sub-band sample.
func (e *g722Encoder) encodeLow(x int32) int32 {
	b := &e.low
	diff := saturate16(x - b.estimate)
	magnitude := diff
	if diff < 0 {
		magnitude = -(diff + 1)
	}
	interval := int32(1)
	for ; interval < 30; interval++ {
		if magnitude < (g722LowDecision[interval]*b.scale)>>12 {
			break
		}
	}
	code := g722LowCodePositive[interval]
	if diff < 0 {
		code = g722LowCodeNegative[interval]
	}
	e.low.updateLow(code)
	return code
}

// encodeHigh runs blocks 1H-4H on one higher sub-band sample.
func (e *g722Encoder) encodeHigh(x int32) int32 {
	b := &e.high
	diff := saturate16(x - b.estimate)
	magnitude := diff
	if diff < 0 {
		magnitude = -(diff + 1)
	}
	interval := int32(1)
	if magnitude >= (g722HighDecision*b.scale)>>12 {
		interval = 2
	}
	code := g722HighCodePositive[interval]
	if diff < 0 {
		code = g722HighCodeNegative[interval]
	}
	e.high.updateHigh(code)
	return code
}

// updateLow advances the lower band state with a 6-bit code; encoder and
// decoder both call it so their predictors stay identical.
func (b *g722Band) updateLow(code int32) {
	truncated := code >> 2
	d := (b.scale * g722LowInverse4[truncated]) >> 15
	b.adaptScale(g722LowLogStep[g722LowMagnitude[truncated]], g722LowLogScaleMax, 8)
	b.predict(d)
}

// updateHigh advances the higher band state with a 2-bit code and returns
// the quantised difference.
func (b *g722Band) updateHigh(code int32) int32 {
	d := (b.scale * g722HighInverse[code]) >> 15
	b.adaptScale(g722HighLogStep[g722HighMagnitude[code]], g722HighLogScaleMax, 10)
	b.predict(d)
	return d
}

func (e *g722Encoder) SampleRate() int { return 16000 }
func (e *g722Encoder) Name() Name      { return G722 }
func (e *g722Encoder) Close()          {}

// g722Decoder holds the receive QMF and both ADPCM decoders.
type g722Decoder struct {
	// qmf holds the last 12 pairs of (sum, difference) band signals,
	// oldest first.
	qmf       [24]int32
	low, high g722Band
	plc       concealer
	// packetSamples is the length of the last packet decoded, which a lost
	// packet is taken to share.
	packetSamples int
}

func newG722Decoder() *g722Decoder {
	d := &g722Decoder{packetSamples: g722FrameSamples}
	d.low.reset(g722LowScaleInit)
	d.high.reset(g722HighScaleInit)
	d.plc.init(16000)
	return d
}

// Decode expands every octet into two samples; any payload length is valid.
func (d *g722Decoder) Decode(payload []byte, pcm []int16) (int, error) {
	n := 2 * len(payload)
	if len(pcm) < n {
		return 0, fmt.Errorf("decode G722 %d bytes into %d samples: %w", len(payload), len(pcm), ErrShortBuffer)
	}
	for i, octet := range payload {
		rLow := d.decodeLow(int32(octet & 0x3F))
		rHigh := d.decodeHigh(int32(octet >> 6))
		pcm[2*i], pcm[2*i+1] = d.merge(rLow, rHigh)
	}
	d.plc.remember(pcm[:n])
	if n > 0 {
		d.packetSamples = n
	}
	return n, nil
}

// decodeLow reconstructs one lower sub-band sample from a 6-bit code.
func (d *g722Decoder) decodeLow(code int32) int32 {
	b := &d.low
	out := b.estimate + (b.scale*g722LowInverse6[code])>>15
	out = max(-16384, min(16383, out))
	b.updateLow(code)
	return out
}

// decodeHigh reconstructs one higher sub-band sample from a 2-bit code.
func (d *g722Decoder) decodeHigh(code int32) int32 {
	b := &d.high
	estimate := b.estimate // updateHigh moves on to the next estimate
	out := estimate + b.updateHigh(code)
	return max(-16384, min(16383, out))
}

// merge runs the receive QMF on one pair of band samples and returns two
// output samples, older first.
func (d *g722Decoder) merge(rLow, rHigh int32) (int16, int16) {
	copy(d.qmf[:22], d.qmf[2:])
	d.qmf[22], d.qmf[23] = rLow+rHigh, rLow-rHigh
	var older, newer int32
	for i := 0; i < 24; i += 2 {
		newer += d.qmf[i] * g722QMF[i]
		older += d.qmf[i+1] * g722QMF[i+1]
	}
	return int16(saturate16(older >> 11)), int16(saturate16(newer >> 11))
}

// DecodeLost ignores next: G.722 carries no redundancy. The ADPCM state is
// left as it was, which is what the standard's decoders do across a gap.
func (d *g722Decoder) DecodeLost(_ []byte, pcm []int16) (int, error) {
	n := d.packetSamples
	if len(pcm) < n {
		return 0, fmt.Errorf("conceal G722 %d samples into %d: %w", n, len(pcm), ErrShortBuffer)
	}
	d.plc.conceal(pcm[:n])
	return n, nil
}

func (d *g722Decoder) SampleRate() int { return 16000 }
func (d *g722Decoder) Name() Name      { return G722 }
func (d *g722Decoder) Close()          {}
