package codec

import (
	"fmt"
	"math"
)

// Resampler converts mono PCM between 8, 16 and 48 kHz by integer ratios
// with a polyphase windowed-sinc low-pass filter. It keeps its filter
// history between calls, so a stream converted frame by frame is identical
// to one converted in a single call: no clicks at frame boundaries. A
// Resampler is for one stream and not safe for concurrent use.
type Resampler struct {
	from, to int
	// up is the interpolation factor (to/from) and down the decimation
	// factor (from/to); at most one of them exceeds 1.
	up, down int

	// phases holds the filter split into up polyphase branches, each with
	// its taps in chronological order (oldest sample first) and the gain
	// of up folded in. When decimating there is a single branch.
	phases [][]float32
	taps   int

	// history is a ring of the last taps input samples stored twice, so
	// the newest taps samples are always contiguous at
	// history[head+1 : head+1+taps].
	history []float32
	head    int
	// pending counts inputs since the last output when decimating.
	pending int
}

// Filter design. tapsPerPhase sets the length relative to the lower rate,
// which fixes the transition band at about 1.3 kHz for 8 kHz audio and
// scales it with the rate; kaiserBeta gives roughly 80 dB of stop-band
// attenuation. The cutoff sits at 45% of the lower rate: telephone speech
// (up to 3.4 kHz at 8 kHz) passes, and what folds back is attenuated.
const (
	resampleTapsPerPhase = 32
	resampleKaiserBeta   = 8.0
	resampleCutoff       = 0.45
)

// NewResampler builds a converter from one of 8000, 16000 or 48000 Hz to
// another (or the same, which copies).
func NewResampler(from, to int) (*Resampler, error) {
	if !resampleRate(from) || !resampleRate(to) {
		return nil, fmt.Errorf("new resampler %d to %d Hz: %w", from, to, ErrUnsupported)
	}
	r := &Resampler{from: from, to: to, up: 1, down: 1}
	switch {
	case to > from:
		r.up = to / from
	case from > to:
		r.down = from / to
	default:
		return r, nil
	}
	factor := max(r.up, r.down)
	prototype := lowPass(resampleTapsPerPhase*factor, resampleCutoff/float64(factor))
	if r.up > 1 {
		r.taps = resampleTapsPerPhase
		r.phases = make([][]float32, r.up)
		for p := range r.up {
			branch := make([]float32, r.taps)
			// Branch p produces the output p/up of an input period after
			// the newest input; its tap k multiplies the sample k inputs
			// back, and is stored reversed for a chronological window.
			for k := range r.taps {
				branch[r.taps-1-k] = float32(prototype[k*r.up+p] * float64(r.up))
			}
			r.phases[p] = branch
		}
	} else {
		r.taps = len(prototype)
		branch := make([]float32, r.taps)
		for k, c := range prototype {
			branch[r.taps-1-k] = float32(c)
		}
		r.phases = [][]float32{branch}
	}
	r.history = make([]float32, 2*r.taps)
	return r, nil
}

func resampleRate(rate int) bool {
	return rate == 8000 || rate == 16000 || rate == 48000
}

// From returns the input sample rate in Hz.
func (r *Resampler) From() int { return r.from }

// To returns the output sample rate in Hz.
func (r *Resampler) To() int { return r.to }

// OutputLen returns how many samples Process may write for inputs samples,
// the size to give out.
func (r *Resampler) OutputLen(inputs int) int {
	return (inputs*r.up + r.down - 1) / r.down
}

// Delay returns the filter's group delay in output samples: how far a
// feature in the input appears later in the output.
func (r *Resampler) Delay() int {
	if r.up == 1 && r.down == 1 {
		return 0
	}
	return (resampleTapsPerPhase*max(r.up, r.down) - 1) / 2 / r.down
}

// Process converts in and writes the result to out, returning the number of
// samples written. Conversion stops early, leaving the rest of in
// unconsumed, if out is shorter than OutputLen(len(in)); size out with
// OutputLen so that never happens.
func (r *Resampler) Process(in, out []int16) int {
	switch {
	case r.up > 1:
		return r.interpolate(in, out)
	case r.down > 1:
		return r.decimate(in, out)
	default:
		return copy(out, in)
	}
}

func (r *Resampler) push(sample int16) {
	r.head++
	if r.head == r.taps {
		r.head = 0
	}
	v := float32(sample)
	r.history[r.head] = v
	r.history[r.head+r.taps] = v
}

func (r *Resampler) window() []float32 {
	return r.history[r.head+1 : r.head+1+r.taps]
}

func (r *Resampler) interpolate(in, out []int16) int {
	written := 0
	for _, sample := range in {
		if written+r.up > len(out) {
			break
		}
		r.push(sample)
		window := r.window()
		for _, branch := range r.phases {
			out[written] = toInt16(dot(branch, window))
			written++
		}
	}
	return written
}

func (r *Resampler) decimate(in, out []int16) int {
	written := 0
	for _, sample := range in {
		if r.pending == 0 && written == len(out) {
			break
		}
		r.push(sample)
		if r.pending == 0 {
			out[written] = toInt16(dot(r.phases[0], r.window()))
			written++
		}
		r.pending++
		if r.pending == r.down {
			r.pending = 0
		}
	}
	return written
}

// dot is the filter's inner loop; both slices have the same length.
func dot(taps, window []float32) float32 {
	window = window[:len(taps)]
	var sum0, sum1 float32
	i := 0
	for ; i+1 < len(taps); i += 2 {
		sum0 += taps[i] * window[i]
		sum1 += taps[i+1] * window[i+1]
	}
	if i < len(taps) {
		sum0 += taps[i] * window[i]
	}
	return sum0 + sum1
}

func toInt16(v float32) int16 {
	return int16(max(-32768, min(32767, float32(math.Round(float64(v))))))
}

// lowPass designs a linear-phase FIR low-pass of n taps with cutoff given
// as a fraction of the sample rate, using a Kaiser-windowed sinc, and
// normalises it to unity gain at DC.
func lowPass(n int, cutoff float64) []float64 {
	h := make([]float64, n)
	centre := float64(n-1) / 2
	norm := besselI0(resampleKaiserBeta)
	var sum float64
	for i := range h {
		t := float64(i) - centre
		sinc := 2 * cutoff
		if t != 0 {
			sinc = math.Sin(2*math.Pi*cutoff*t) / (math.Pi * t)
		}
		ratio := t / centre
		window := besselI0(resampleKaiserBeta*math.Sqrt(max(0, 1-ratio*ratio))) / norm
		h[i] = sinc * window
		sum += h[i]
	}
	for i := range h {
		h[i] /= sum
	}
	return h
}

// besselI0 is the zeroth-order modified Bessel function of the first kind,
// by its power series, which converges fast for the β used here.
func besselI0(x float64) float64 {
	sum, term := 1.0, 1.0
	half := x / 2
	for k := 1; k < 50; k++ {
		term *= half / float64(k)
		sum += term * term
		if term*term < sum*1e-17 {
			break
		}
	}
	return sum
}
