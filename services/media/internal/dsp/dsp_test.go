package dsp

import (
	"fmt"
	"math"
	"testing"
)

func TestToneContinuesAcrossFills(t *testing.T) {
	whole := NewTone(1000, 8000, 10000)
	want := make([]int16, 480)
	whole.Fill(want)

	framed := NewTone(1000, 8000, 10000)
	got := make([]int16, 0, len(want))
	for _, size := range []int{160, 7, 153, 1, 159} {
		buf := make([]int16, size)
		framed.Fill(buf)
		got = append(got, buf...)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sample %d: framed %d, whole %d", i, got[i], want[i])
		}
	}
}

func TestToneShape(t *testing.T) {
	tests := []struct {
		freq, rate float64
		amplitude  int16
	}{
		{1000, 8000, 10000},
		{440, 16000, 32767},
		{3400, 48000, 100},
	}
	for _, tt := range tests {
		t.Run(formatHz(tt.freq), func(t *testing.T) {
			pcm := make([]int16, int(tt.rate)/10)
			NewTone(tt.freq, tt.rate, tt.amplitude).Fill(pcm)
			if pcm[0] != 0 {
				t.Fatalf("tone starts at %d, want 0 (sine phase)", pcm[0])
			}
			peak := int16(0)
			for _, s := range pcm {
				peak = max(peak, s, -s)
			}
			if math.Abs(float64(peak-tt.amplitude)) > float64(tt.amplitude)*0.01+1 {
				t.Fatalf("peak %d, want %d", peak, tt.amplitude)
			}
			if got := ToneSNR(pcm, tt.freq, tt.rate); got < 40 {
				t.Fatalf("generated tone SNR %.1f dB, want ≥ 40", got)
			}
		})
	}
}

func formatHz(f float64) string { return fmt.Sprintf("%gHz", f) }

func TestAmplitudeFromDBFS(t *testing.T) {
	tests := []struct {
		dbfs float64
		want int16
	}{
		{0, 32767},
		{-6, 16422},
		{-20, 3277},
		{3, 32767}, // above full scale clamps
	}
	for _, tt := range tests {
		if got := AmplitudeFromDBFS(tt.dbfs); got != tt.want {
			t.Errorf("AmplitudeFromDBFS(%v) = %d, want %d", tt.dbfs, got, tt.want)
		}
	}
}

func TestGoertzelPowerScale(t *testing.T) {
	tests := []struct {
		desc      string
		toneHz    float64
		measureHz float64
		want      float64
	}{
		// A sine of peak A has mean square A²/2.
		{"on frequency", 1000, 1000, 1e8 / 2},
		{"other bin", 1000, 2000, 0},
		{"neighbour bin", 1000, 1050, 0},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			pcm := make([]int16, 160) // 20 ms: bins every 50 Hz
			NewTone(tt.toneHz, 8000, 10000).Fill(pcm)
			got := GoertzelPower(pcm, tt.measureHz, 8000)
			if math.Abs(got-tt.want) > 1e8*1e-3 {
				t.Fatalf("power %.0f, want %.0f", got, tt.want)
			}
			if tt.want > 0 && math.Abs(got-MeanSquare(pcm)) > 1e8*1e-3 {
				t.Fatalf("power %.0f differs from mean square %.0f for a pure tone", got, MeanSquare(pcm))
			}
		})
	}
	if GoertzelPower(nil, 1000, 8000) != 0 || MeanSquare(nil) != 0 {
		t.Fatal("empty block has power")
	}
}

func TestDominantFrequency(t *testing.T) {
	candidates := []float64{697, 770, 852, 941, 1209, 1336, 1477, 1633}
	for _, want := range candidates {
		t.Run(formatHz(want), func(t *testing.T) {
			pcm := make([]int16, 320)
			NewTone(want, 8000, 5000).Fill(pcm)
			got, power := DominantFrequency(pcm, 8000, candidates)
			if got != want || power <= 0 {
				t.Fatalf("dominant %v Hz (power %v), want %v Hz", got, power, want)
			}
		})
	}
	if f, p := DominantFrequency(make([]int16, 10), 8000, nil); f != 0 || p != 0 {
		t.Fatalf("no candidates gave %v, %v", f, p)
	}
}

func TestToneSNR(t *testing.T) {
	// Deterministic noise from a linear congruential generator.
	noise := func(n int, amplitude float64) []float64 {
		out := make([]float64, n)
		var state uint32 = 1
		for i := range out {
			state = state*1664525 + 1013904223
			out[i] = (float64(state>>8)/float64(1<<24)*2 - 1) * amplitude
		}
		return out
	}
	tests := []struct {
		desc       string
		noiseLevel float64
		dcOffset   float64
		toneHz     float64 // not a whole number of cycles for some cases
		want       float64
		tolerance  float64
	}{
		// Uniform noise of peak N has mean square N²/3; the tone A²/2.
		// 10000 vs 1000: 10·log10((1e8/2)/(1e6/3)) = 21.76 dB.
		{"20 dB", 1000, 0, 1000, 21.76, 0.5},
		{"40 dB", 100, 0, 1000, 41.76, 0.5},
		{"DC is ignored", 100, 3000, 1000, 41.76, 0.5},
		{"fractional cycles", 100, 0, 1013.7, 41.76, 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			pcm := make([]int16, 1600)
			NewTone(tt.toneHz, 8000, 10000).Fill(pcm)
			for i, n := range noise(len(pcm), tt.noiseLevel) {
				pcm[i] = int16(math.Round(float64(pcm[i]) + n + tt.dcOffset))
			}
			if got := ToneSNR(pcm, tt.toneHz, 8000); math.Abs(got-tt.want) > tt.tolerance {
				t.Fatalf("ToneSNR = %.2f dB, want %.2f", got, tt.want)
			}
		})
	}
	silent := make([]int16, 160)
	if got := ToneSNR(silent, 1000, 8000); !math.IsInf(got, -1) {
		t.Fatalf("ToneSNR of silence = %v, want -Inf", got)
	}
	other := make([]int16, 160)
	NewTone(2000, 8000, 10000).Fill(other)
	if got := ToneSNR(other, 1000, 8000); got > -40 {
		t.Fatalf("ToneSNR of a 2 kHz tone at 1 kHz = %.1f dB, want very negative", got)
	}
	if got := ToneSNR(nil, 1000, 8000); !math.IsInf(got, -1) {
		t.Fatalf("ToneSNR(nil) = %v, want -Inf", got)
	}
}

func TestDTMF(t *testing.T) {
	tests := []struct {
		digit     rune
		low, high float64
		ok        bool
	}{
		{'1', 697, 1209, true},
		{'5', 770, 1336, true},
		{'9', 852, 1477, true},
		{'0', 941, 1336, true},
		{'*', 941, 1209, true},
		{'#', 941, 1477, true},
		{'A', 697, 1633, true},
		{'d', 941, 1633, true},
		{'E', 0, 0, false},
		{'x', 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.digit), func(t *testing.T) {
			low, high, ok := DTMF(tt.digit)
			if low != tt.low || high != tt.high || ok != tt.ok {
				t.Fatalf("DTMF(%q) = %v, %v, %v; want %v, %v, %v", tt.digit, low, high, ok, tt.low, tt.high, tt.ok)
			}
		})
	}
}

func TestDTMFToneCarriesBothFrequencies(t *testing.T) {
	rows := []float64{697, 770, 852, 941}
	columns := []float64{1209, 1336, 1477, 1633}
	for _, digit := range DTMFDigits {
		t.Run(string(digit), func(t *testing.T) {
			gen, err := NewDTMFTone(digit, 8000, AmplitudeFromDBFS(-9))
			if err != nil {
				t.Fatal(err)
			}
			pcm := make([]int16, 400) // 50 ms, a typical digit length
			gen.Fill(pcm)
			wantLow, wantHigh, _ := DTMF(digit)
			if got, _ := DominantFrequency(pcm, 8000, rows); got != wantLow {
				t.Fatalf("low group %v Hz, want %v Hz", got, wantLow)
			}
			if got, _ := DominantFrequency(pcm, 8000, columns); got != wantHigh {
				t.Fatalf("high group %v Hz, want %v Hz", got, wantHigh)
			}
		})
	}
	if _, err := NewDTMFTone('z', 8000, 1000); err == nil {
		t.Fatal("NewDTMFTone accepted 'z'")
	}
}

func TestToneAddClips(t *testing.T) {
	pcm := []int16{32000, -32000, 0}
	tone := NewTone(2000, 8000, 10000) // samples 0, +10000, 0
	tone.Add(pcm)
	want := []int16{32000, -22000, 0}
	for i := range want {
		if pcm[i] != want[i] {
			t.Fatalf("Add gave %v, want %v", pcm, want)
		}
	}
	pcm = []int16{0, 30000}
	NewTone(2000, 8000, 10000).Add(pcm)
	if pcm[1] != 32767 {
		t.Fatalf("Add did not clip: %v", pcm)
	}
}

// TestToneSNRWithoutTone checks blocks that carry no tone at all: silence
// and a constant offset have no sine to fit, so they must score as the
// absence of the tone (-Inf), never as a perfect one.
func TestToneSNRWithoutTone(t *testing.T) {
	constant := make([]int16, 160)
	for i := range constant {
		constant[i] = 5
	}
	for _, tt := range []struct {
		desc  string
		block []int16
	}{
		{"silence", make([]int16, 160)},
		{"constant offset", constant},
		{"one sample", []int16{0}},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			if got := ToneSNR(tt.block, 1000, 8000); !math.IsInf(got, -1) {
				t.Fatalf("ToneSNR = %v, want -Inf", got)
			}
		})
	}
}
