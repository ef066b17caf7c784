package dsp

import "math"

// ToneSNR estimates how cleanly block carries a sine at freqHz: the power of
// the best-fitting sine at that frequency against the power of everything
// else (noise, distortion, other tones), in dB. The fit is a least-squares
// three-parameter sine fit (IEEE 1241 style: cosine, sine and DC terms), so
// unlike a bare Goertzel bin it is exact for blocks that do not hold a whole
// number of cycles. DC is excluded from both sides. A perfect tone returns
// +Inf, a block without the tone a large negative value, and one with
// nothing at freqHz at all (silence, a constant, an empty block) -Inf.
func ToneSNR(block []int16, freqHz, sampleRate float64) float64 {
	if len(block) == 0 {
		return math.Inf(-1)
	}
	a, b, dc := fitSine(block, freqHz, sampleRate)
	// Samples are integers, so a fitted peak this far below one step is
	// rounding noise of the solve, not a tone: silence or a constant block
	// would otherwise score 0/0 and come out as a perfect tone or as 0 dB.
	if a*a+b*b < noToneAmplitude*noToneAmplitude {
		return math.Inf(-1)
	}
	omega := 2 * math.Pi * freqHz / sampleRate
	var signal, residual float64
	for n, x := range block {
		c, s := math.Cos(omega*float64(n)), math.Sin(omega*float64(n))
		fitted := a*c + b*s
		signal += fitted * fitted
		r := float64(x) - dc - fitted
		residual += r * r
	}
	if residual == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(signal/residual)
}

// noToneAmplitude is the fitted peak, in sample steps, below which ToneSNR
// finds no tone.
const noToneAmplitude = 1e-6

// fitSine solves the 3x3 normal equations for x[n] ≈ a·cos(ωn) + b·sin(ωn) + dc.
func fitSine(block []int16, freqHz, sampleRate float64) (a, b, dc float64) {
	omega := 2 * math.Pi * freqHz / sampleRate
	var m [3][4]float64 // augmented matrix of the normal equations
	for n, x := range block {
		basis := [3]float64{math.Cos(omega * float64(n)), math.Sin(omega * float64(n)), 1}
		for i := range 3 {
			for j := range 3 {
				m[i][j] += basis[i] * basis[j]
			}
			m[i][3] += basis[i] * float64(x)
		}
	}
	solution, ok := solve3(m)
	if !ok {
		return 0, 0, 0
	}
	return solution[0], solution[1], solution[2]
}

// solve3 runs Gaussian elimination with partial pivoting; ok is false when
// the system is singular (for instance a frequency of 0 or Nyquist, where
// the sine column vanishes).
func solve3(m [3][4]float64) (x [3]float64, ok bool) {
	for col := range 3 {
		pivot := col
		for row := col + 1; row < 3; row++ {
			if math.Abs(m[row][col]) > math.Abs(m[pivot][col]) {
				pivot = row
			}
		}
		if math.Abs(m[pivot][col]) < 1e-9 {
			return x, false
		}
		m[col], m[pivot] = m[pivot], m[col]
		for row := range 3 {
			if row == col {
				continue
			}
			factor := m[row][col] / m[col][col]
			for k := col; k < 4; k++ {
				m[row][k] -= factor * m[col][k]
			}
		}
	}
	for i := range 3 {
		x[i] = m[i][3] / m[i][i]
	}
	return x, true
}
