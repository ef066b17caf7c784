package dsp

import "math"

// FullScale is the peak of a full-scale int16 sine, the 0 dBFS reference.
const FullScale = 32767

// AmplitudeFromDBFS converts a level in dBFS (0 is full scale, telephony
// test tones are usually -10 to -20) to a peak amplitude for NewTone.
func AmplitudeFromDBFS(dbfs float64) int16 {
	return int16(math.Round(FullScale * math.Pow(10, min(dbfs, 0)/20)))
}

// Tone generates a sine wave. Successive Fill calls continue the waveform
// exactly where the previous one stopped, so frames can be generated one at
// a time without a discontinuity at their boundaries.
type Tone struct {
	amplitude float64
	// phase is the current angle in radians, kept in [0, 2π) so precision
	// does not decay over a long call.
	phase float64
	step  float64
}

// NewTone returns a generator of freqHz sampled at sampleRate with the given
// peak amplitude (see AmplitudeFromDBFS).
func NewTone(freqHz, sampleRate float64, amplitude int16) *Tone {
	return &Tone{
		amplitude: float64(amplitude),
		step:      2 * math.Pi * freqHz / sampleRate,
	}
}

// Fill overwrites pcm with the next len(pcm) samples of the tone.
func (t *Tone) Fill(pcm []int16) {
	for i := range pcm {
		pcm[i] = int16(math.Round(t.amplitude * math.Sin(t.phase)))
		t.advance()
	}
}

// Add mixes the next len(pcm) samples of the tone into pcm, clipping at full
// scale; it lets several tones share one buffer.
func (t *Tone) Add(pcm []int16) {
	for i := range pcm {
		mixed := float64(pcm[i]) + math.Round(t.amplitude*math.Sin(t.phase))
		pcm[i] = int16(max(-FullScale-1, min(FullScale, mixed)))
		t.advance()
	}
}

func (t *Tone) advance() {
	t.phase += t.step
	if t.phase >= 2*math.Pi {
		t.phase -= 2 * math.Pi
	}
}
