package codec

import (
	"testing"

	"callgrid.dev/services/media/internal/dsp"
)

// testToneHz is the reference tone every round-trip test sends: 1 kHz is a
// whole number of cycles in a 20 ms frame at every rate used here.
const testToneHz = 1000

// toneCandidates are the frequencies a round trip could plausibly turn the
// test tone into if something were wrong (mirror images, harmonics,
// aliases), checked against the tone itself.
var toneCandidates = []float64{300, 500, testToneHz, 1500, 2000, 3000, 4000, 6000, 7000}

// toneFrames returns frames of 20 ms of a -10 dBFS 1 kHz tone at rate,
// generated as one continuous waveform.
func toneFrames(t testing.TB, rate, frames int) [][]int16 {
	t.Helper()
	tone := dsp.NewTone(testToneHz, float64(rate), dsp.AmplitudeFromDBFS(-10))
	out := make([][]int16, frames)
	for i := range out {
		out[i] = make([]int16, FrameSamplesAt(rate))
		tone.Fill(out[i])
	}
	return out
}

// checkTone asserts that pcm carries the test tone as its dominant
// frequency with at least minSNR dB.
func checkTone(t *testing.T, pcm []int16, rate int, minSNR float64) {
	t.Helper()
	var candidates []float64
	for _, f := range toneCandidates {
		if f < float64(rate)/2 {
			candidates = append(candidates, f)
		}
	}
	freq, _ := dsp.DominantFrequency(pcm, float64(rate), candidates)
	if freq != testToneHz {
		t.Fatalf("dominant frequency %v Hz, want %v Hz", freq, testToneHz)
	}
	snr := dsp.ToneSNR(pcm, testToneHz, float64(rate))
	t.Logf("tone SNR %.1f dB (want ≥ %.0f)", snr, minSNR)
	if snr < minSNR {
		t.Fatalf("tone SNR %.1f dB, want at least %.0f dB", snr, minSNR)
	}
}
