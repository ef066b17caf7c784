package codec

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"callgrid.dev/services/media/internal/dsp"
)

var resamplePairs = [][2]int{
	{8000, 16000}, {16000, 8000},
	{8000, 48000}, {48000, 8000},
	{16000, 48000}, {48000, 16000},
	{16000, 16000},
}

// resampleFrames runs frames through r one at a time, as a call would.
func resampleFrames(t testing.TB, r *Resampler, frames [][]int16) []int16 {
	t.Helper()
	var out []int16
	buf := make([]int16, r.OutputLen(FrameSamplesAt(r.From())))
	for _, frame := range frames {
		n := r.Process(frame, buf)
		if n != FrameSamplesAt(r.To()) {
			t.Fatalf("Process gave %d samples for a 20 ms frame, want %d", n, FrameSamplesAt(r.To()))
		}
		out = append(out, buf[:n]...)
	}
	return out
}

func TestResampleTone(t *testing.T) {
	for _, pair := range resamplePairs {
		from, to := pair[0], pair[1]
		t.Run(fmt.Sprintf("%d-%d", from, to), func(t *testing.T) {
			r, err := NewResampler(from, to)
			if err != nil {
				t.Fatalf("NewResampler: %v", err)
			}
			out := resampleFrames(t, r, toneFrames(t, from, 10))
			// Judge the second half, well clear of the filter's start-up.
			checkTone(t, out[len(out)/2:], to, 45)
			// Level is preserved: -10 dBFS in, -10 dBFS out.
			want := math.Pow(float64(dsp.AmplitudeFromDBFS(-10)), 2) / 2
			got := dsp.GoertzelPower(out[len(out)/2:], testToneHz, float64(to))
			if db := 10 * math.Log10(got/want); math.Abs(db) > 0.2 {
				t.Fatalf("tone level changed by %.2f dB", db)
			}
		})
	}
}

// TestResampleFramingInvariant proves there is nothing special about frame
// boundaries: converting frame by frame equals converting in one call,
// and odd-sized chunks (which split a decimation period) change nothing.
func TestResampleFramingInvariant(t *testing.T) {
	for _, pair := range resamplePairs {
		from, to := pair[0], pair[1]
		t.Run(fmt.Sprintf("%d-%d", from, to), func(t *testing.T) {
			input := slices.Concat(toneFrames(t, from, 6)...)
			whole, err := NewResampler(from, to)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]int16, whole.OutputLen(len(input)))
			want = want[:whole.Process(input, want)]

			chunked, _ := NewResampler(from, to)
			var got []int16
			buf := make([]int16, chunked.OutputLen(len(input)))
			for rest, size := input, 1; len(rest) > 0; size = size%97 + 13 {
				chunk := rest[:min(size, len(rest))]
				rest = rest[len(chunk):]
				n := chunked.Process(chunk, buf)
				got = append(got, buf[:n]...)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("chunked output differs from whole output (%d vs %d samples)", len(got), len(want))
			}
		})
	}
}

// TestResampleRejectsAliases feeds tones the target rate cannot carry and
// checks the filter removes them instead of folding them into the band.
func TestResampleRejectsAliases(t *testing.T) {
	tests := []struct {
		from, to int
		toneHz   float64
		aliasHz  float64
	}{
		{48000, 8000, 6000, 2000},
		{16000, 8000, 6000, 2000},
		{48000, 16000, 12000, 4000},
		// Interpolation must not leave images of a 1 kHz tone at 7 kHz.
		{8000, 48000, 1000, 7000},
		{8000, 16000, 1000, 7000},
		{16000, 48000, 1000, 15000},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-%d/%v", tt.from, tt.to, tt.toneHz), func(t *testing.T) {
			r, _ := NewResampler(tt.from, tt.to)
			tone := dsp.NewTone(tt.toneHz, float64(tt.from), dsp.AmplitudeFromDBFS(-3))
			in := make([]int16, tt.from/10)
			tone.Fill(in)
			out := make([]int16, r.OutputLen(len(in)))
			out = out[:r.Process(in, out)]
			steady := out[len(out)/2:]
			input := dsp.GoertzelPower(in, tt.toneHz, float64(tt.from))
			alias := dsp.GoertzelPower(steady, tt.aliasHz, float64(tt.to))
			if db := 10 * math.Log10(alias/input); db > -55 {
				t.Fatalf("alias at %v Hz only %.1f dB below the input tone", tt.aliasHz, db)
			}
		})
	}
}

func TestResamplerRejectsRates(t *testing.T) {
	for _, pair := range [][2]int{{8000, 44100}, {11025, 8000}, {0, 8000}, {8000, 24000}} {
		t.Run(fmt.Sprintf("%d-%d", pair[0], pair[1]), func(t *testing.T) {
			if _, err := NewResampler(pair[0], pair[1]); !errors.Is(err, ErrUnsupported) {
				t.Fatalf("NewResampler: %v, want ErrUnsupported", err)
			}
		})
	}
}

func TestResampleShortOutputStopsEarly(t *testing.T) {
	r, _ := NewResampler(8000, 48000)
	in := make([]int16, 160)
	out := make([]int16, 100)
	if n := r.Process(in, out); n != 96 {
		t.Fatalf("Process wrote %d samples into 100, want 96 (16 whole inputs)", n)
	}
	d, _ := NewResampler(48000, 8000)
	if n := d.Process(make([]int16, 960), make([]int16, 10)); n != 10 {
		t.Fatalf("Process wrote %d samples into 10, want 10", n)
	}
}

func TestResampleDelay(t *testing.T) {
	for _, pair := range resamplePairs {
		from, to := pair[0], pair[1]
		t.Run(fmt.Sprintf("%d-%d", from, to), func(t *testing.T) {
			r, _ := NewResampler(from, to)
			// An impulse comes out as the filter's peak, Delay samples late.
			in := make([]int16, from/50)
			in[0] = 16000
			out := make([]int16, r.OutputLen(len(in)))
			out = out[:r.Process(in, out)]
			peak := 0
			for i, v := range out {
				if v > out[peak] {
					peak = i
				}
			}
			if d := r.Delay(); peak < d-1 || peak > d+1 {
				t.Fatalf("impulse peak at %d, Delay() = %d", peak, d)
			}
		})
	}
}
