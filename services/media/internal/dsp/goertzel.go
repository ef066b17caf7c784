package dsp

import "math"

// Goertzel measures the power of one frequency in blocks of samples, at a
// fraction of the cost of an FFT when only a few frequencies matter. It
// keeps no state between blocks.
type Goertzel struct {
	freqHz float64
	coeff  float64
	cos    float64
	sin    float64
}

// NewGoertzel prepares a detector for freqHz at sampleRate.
func NewGoertzel(freqHz, sampleRate float64) Goertzel {
	omega := 2 * math.Pi * freqHz / sampleRate
	return Goertzel{freqHz: freqHz, coeff: 2 * math.Cos(omega), cos: math.Cos(omega), sin: math.Sin(omega)}
}

// Frequency returns the frequency the detector measures, in Hz.
func (g Goertzel) Frequency() float64 { return g.freqHz }

// Power returns the power of the detector's frequency in block, scaled so
// that a sine of peak amplitude A spanning a whole number of cycles yields
// A²/2, its mean square; it is therefore comparable with MeanSquare. An
// empty block has no power.
func (g Goertzel) Power(block []int16) float64 {
	if len(block) == 0 {
		return 0
	}
	var s1, s2 float64
	for _, x := range block {
		s1, s2 = float64(x)+g.coeff*s1-s2, s1
	}
	re := s1 - s2*g.cos
	im := s2 * g.sin
	n := float64(len(block))
	return 2 * (re*re + im*im) / (n * n)
}

// GoertzelPower is the one-shot form of NewGoertzel(freqHz, sampleRate).Power(block).
func GoertzelPower(block []int16, freqHz, sampleRate float64) float64 {
	return NewGoertzel(freqHz, sampleRate).Power(block)
}

// MeanSquare returns the average of the squared samples, the total power of
// block in the units Power uses.
func MeanSquare(block []int16) float64 {
	if len(block) == 0 {
		return 0
	}
	var sum float64
	for _, x := range block {
		sum += float64(x) * float64(x)
	}
	return sum / float64(len(block))
}

// DominantFrequency returns which of candidates carries the most power in
// block, and that power. With no candidates it returns (0, 0).
func DominantFrequency(block []int16, sampleRate float64, candidates []float64) (freqHz, power float64) {
	power = -1
	for _, f := range candidates {
		if p := GoertzelPower(block, f, sampleRate); p > power {
			freqHz, power = f, p
		}
	}
	return freqHz, max(power, 0)
}
