package dsp

import "testing"

func BenchmarkToneFill(b *testing.B) {
	for _, rate := range []float64{8000, 48000} {
		b.Run(formatHz(rate), func(b *testing.B) {
			tone := NewTone(1000, rate, 10000)
			pcm := make([]int16, int(rate)/50)
			b.ReportAllocs()
			for b.Loop() {
				tone.Fill(pcm)
			}
		})
	}
}

func BenchmarkGoertzel(b *testing.B) {
	pcm := make([]int16, 160)
	NewTone(1000, 8000, 10000).Fill(pcm)
	g := NewGoertzel(1000, 8000)
	b.ReportAllocs()
	for b.Loop() {
		g.Power(pcm)
	}
}

func BenchmarkDominantFrequencyDTMF(b *testing.B) {
	pcm := make([]int16, 160)
	gen, _ := NewDTMFTone('5', 8000, 8000)
	gen.Fill(pcm)
	candidates := []float64{697, 770, 852, 941, 1209, 1336, 1477, 1633}
	b.ReportAllocs()
	for b.Loop() {
		DominantFrequency(pcm, 8000, candidates)
	}
}

func BenchmarkToneSNR(b *testing.B) {
	pcm := make([]int16, 160)
	NewTone(1000, 8000, 10000).Fill(pcm)
	b.ReportAllocs()
	for b.Loop() {
		ToneSNR(pcm, 1000, 8000)
	}
}
