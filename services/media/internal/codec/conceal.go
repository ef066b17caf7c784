package codec

import "math"

// concealer hides lost frames for codecs without their own loss concealment
// (G.711, G.722). It follows the idea of G.711 Appendix I: find the pitch
// period of the last good audio and keep repeating it, which continues
// voiced speech and tones without a click, then fade out so a long gap
// becomes silence rather than a buzzing loop.
type concealer struct {
	// history holds the most recent decoded audio, oldest first; recent is
	// the part of it in use at the decoder's rate.
	history [maxConcealHistory]int16
	recent  []int16
	rate    int

	// period is the pitch period in samples found at the start of a loss,
	// and phase the position reached inside it, so consecutive lost frames
	// continue the waveform where the previous one stopped.
	period int
	phase  int
	// concealed counts samples synthesised since the last real audio.
	concealed int
}

// Pitch search range in Hz: covers adult and child voices and the low
// frequency call-progress tones. The lower bound is G.711 Appendix I's
// longest period, 15 ms.
const (
	pitchMaxHz = 400
	pitchMinHz = 66
)

// concealHistoryMs is how much past audio the pitch search looks at. It must
// hold two of the longest periods, so that even that lag is compared over a
// whole period of the newest audio; one 20 ms frame would cap the search at
// 100 Hz and miss the lower adult male voices.
const concealHistoryMs = 32

// maxConcealHistory is concealHistoryMs at 16 kHz, the highest rate that uses
// concealer.
const maxConcealHistory = 16000 * concealHistoryMs / 1000

// Concealment timing, in milliseconds: full level at first, then a linear
// fade reaching silence 60 ms into the gap, as G.711 Appendix I does.
const (
	concealHoldMs = 10
	concealFadeMs = 50
)

// init prepares c for audio at rate. It works in place because recent
// points into c's own history array.
func (c *concealer) init(rate int) {
	c.rate = rate
	c.recent = c.history[:rate*concealHistoryMs/1000]
}

// remember records freshly decoded audio and ends any concealment.
func (c *concealer) remember(pcm []int16) {
	if len(pcm) >= len(c.recent) {
		copy(c.recent, pcm[len(pcm)-len(c.recent):])
	} else {
		copy(c.recent, c.recent[len(pcm):])
		copy(c.recent[len(c.recent)-len(pcm):], pcm)
	}
	c.concealed = 0
}

// conceal fills out with a continuation of the remembered audio.
func (c *concealer) conceal(out []int16) {
	if c.concealed == 0 {
		c.period = c.pitchPeriod()
		c.phase = 0
	}
	hold := c.rate * concealHoldMs / 1000
	fade := c.rate * concealFadeMs / 1000
	start := len(c.recent) - c.period
	for i := range out {
		gain := 1.0
		if c.concealed > hold {
			gain = max(0, 1-float64(c.concealed-hold)/float64(fade))
		}
		out[i] = int16(float64(c.recent[start+c.phase]) * gain)
		c.phase++
		if c.phase == c.period {
			c.phase = 0
		}
		c.concealed++
	}
}

// pitchPeriod finds the lag with the highest normalised autocorrelation
// over the remembered audio. Silence or noise still yields a usable lag.
func (c *concealer) pitchPeriod() int {
	minLag := c.rate / pitchMaxHz
	maxLag := min(c.rate/pitchMinHz, len(c.recent)/2)
	best, bestScore := maxLag, 0.0
	found := false
	x := c.recent
	for lag := minLag; lag <= maxLag; lag++ {
		var cross, energy float64
		for n := maxLag; n < len(x); n++ {
			delayed := float64(x[n-lag])
			cross += float64(x[n]) * delayed
			energy += delayed * delayed
		}
		if energy == 0 {
			continue
		}
		// Ties keep the shorter lag, so a periodic signal repeats its
		// fundamental rather than a multiple of it. The first lag with
		// any energy is taken outright, as there is no score to beat yet.
		score := cross / math.Sqrt(energy)
		if !found || score > bestScore+1e-9*math.Abs(bestScore) {
			best, bestScore, found = lag, score, true
		}
	}
	return best
}
