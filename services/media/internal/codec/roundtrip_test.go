package codec

import (
	"fmt"
	"testing"
)

// codecCases lists every codec at every rate it supports, with the tone SNR
// a round trip must keep. G.711 and G.722 are waveform coders and keep
// 40 dB or more on a -10 dBFS tone; Opus is perceptual and lands near 30.
var codecCases = []struct {
	name   Name
	rate   int
	minSNR float64
}{
	{PCMU, 8000, 35},
	{PCMA, 8000, 35},
	{G722, 16000, 40},
	{Opus, 8000, 20},
	{Opus, 16000, 20},
	{Opus, 48000, 20},
}

func caseName(name Name, rate int) string { return fmt.Sprintf("%s/%d", name, rate) }

// newPair builds an encoder and a decoder closed when the test ends.
func newPair(t *testing.T, name Name, rate int) (Encoder, Decoder) {
	t.Helper()
	enc, err := NewEncoder(name, rate, DefaultOpusOptions())
	if err != nil {
		t.Fatalf("NewEncoder(%s, %d): %v", name, rate, err)
	}
	t.Cleanup(enc.Close)
	dec, err := NewDecoder(name, rate)
	if err != nil {
		t.Fatalf("NewDecoder(%s, %d): %v", name, rate, err)
	}
	t.Cleanup(dec.Close)
	return enc, dec
}

// encodeAll encodes frames into one payload each.
func encodeAll(t *testing.T, enc Encoder, frames [][]int16) [][]byte {
	t.Helper()
	payloads := make([][]byte, len(frames))
	buf := make([]byte, OpusMaxPacketBytes)
	for i, frame := range frames {
		n, err := enc.Encode(frame, buf)
		if err != nil {
			t.Fatalf("Encode frame %d: %v", i, err)
		}
		payloads[i] = append([]byte(nil), buf[:n]...)
	}
	return payloads
}

func TestRoundTripTone(t *testing.T) {
	for _, tt := range codecCases {
		t.Run(caseName(tt.name, tt.rate), func(t *testing.T) {
			enc, dec := newPair(t, tt.name, tt.rate)
			const frames = 25
			var decoded []int16
			pcm := make([]int16, FrameSamplesAt(tt.rate))
			for i, payload := range encodeAll(t, enc, toneFrames(t, tt.rate, frames)) {
				n, err := dec.Decode(payload, pcm)
				if err != nil {
					t.Fatalf("Decode frame %d: %v", i, err)
				}
				if n != len(pcm) {
					t.Fatalf("Decode frame %d gave %d samples, want %d", i, n, len(pcm))
				}
				decoded = append(decoded, pcm[:n]...)
			}
			// Skip the first 100 ms, where adaptive coders settle.
			checkTone(t, decoded[len(decoded)*5/frames:], tt.rate, tt.minSNR)
		})
	}
}

// TestConcealment drops one frame in the middle of a tone and checks that
// what each decoder puts in its place still carries the tone, and that
// decoding carries on normally afterwards.
func TestConcealment(t *testing.T) {
	for _, tt := range codecCases {
		for _, withNext := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/next=%v", caseName(tt.name, tt.rate), withNext), func(t *testing.T) {
				enc, dec := newPair(t, tt.name, tt.rate)
				payloads := encodeAll(t, enc, toneFrames(t, tt.rate, 12))
				const lost = 8
				pcm := make([]int16, FrameSamplesAt(tt.rate))
				for i, payload := range payloads {
					if i == lost {
						var next []byte
						if withNext {
							next = payloads[i+1]
						}
						n, err := dec.DecodeLost(next, pcm)
						if err != nil {
							t.Fatalf("DecodeLost: %v", err)
						}
						if n != len(pcm) {
							t.Fatalf("DecodeLost gave %d samples, want %d", n, len(pcm))
						}
						// Concealment is an estimate, and libopus fades its
						// PLC within the frame: ask only that the tone
						// dominates and outweighs everything else.
						checkTone(t, pcm, tt.rate, 0)
						continue
					}
					if _, err := dec.Decode(payload, pcm); err != nil {
						t.Fatalf("Decode frame %d: %v", i, err)
					}
				}
				checkTone(t, pcm, tt.rate, 6)
			})
		}
	}
}

// TestConcealmentFadesToSilence checks that a long gap in a codec without
// its own concealment becomes silence instead of a looping buzz.
func TestConcealmentFadesToSilence(t *testing.T) {
	for _, name := range []Name{PCMU, PCMA, G722} {
		t.Run(string(name), func(t *testing.T) {
			info, _ := Lookup(string(name))
			enc, dec := newPair(t, name, info.SampleRate)
			pcm := make([]int16, info.FrameSamples)
			for _, payload := range encodeAll(t, enc, toneFrames(t, info.SampleRate, 3)) {
				if _, err := dec.Decode(payload, pcm); err != nil {
					t.Fatalf("Decode: %v", err)
				}
			}
			for range 4 {
				if _, err := dec.DecodeLost(nil, pcm); err != nil {
					t.Fatalf("DecodeLost: %v", err)
				}
			}
			for i, s := range pcm {
				if s != 0 {
					t.Fatalf("sample %d is %d after 80 ms of loss, want silence", i, s)
				}
			}
		})
	}
}
