package codec

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"callgrid.dev/services/media/internal/dsp"
)

// TestConcealerPitchPeriod checks the pitch search on tones whose period is
// a whole number of samples, up to 15 ms, the longest G.711 Appendix I
// searches: the repeated period must be the tone's own, not one of its
// equally good multiples nor the longest lag searched.
func TestConcealerPitchPeriod(t *testing.T) {
	for _, rate := range []int{8000, 16000} {
		// Periods in samples at 8 kHz (320, 125, 80 and 66.7 Hz).
		for _, at8k := range []int{25, 64, 100, 120} {
			period := at8k * rate / 8000
			t.Run(fmt.Sprintf("%d/%d", rate, period), func(t *testing.T) {
				// The concealer as the decoder at this rate sets it up.
				c := &newG711Decoder(PCMU).plc
				if rate == 16000 {
					c = &newG722Decoder().plc
				}
				pcm := make([]int16, FrameSamplesAt(rate))
				tone := dsp.NewTone(float64(rate)/float64(period), float64(rate), 8000)
				for range 3 {
					tone.Fill(pcm)
					c.remember(pcm)
				}
				if got := c.pitchPeriod(); got != period {
					t.Fatalf("pitch period %d samples, want %d", got, period)
				}
			})
		}
	}
}

// TestConcealmentContinuesWaveform loses one frame of a low tone whose
// period does not divide the frame and checks the first 10 ms of the
// concealment (before the fade) against what the decoder would have
// produced had the frame arrived: repeating the right period continues the
// waveform in phase, a wrong one puts a click at every repeat.
func TestConcealmentContinuesWaveform(t *testing.T) {
	for _, name := range []Name{PCMU, PCMA, G722} {
		for _, hz := range []float64{80, 125, 200} {
			t.Run(fmt.Sprintf("%s/%vHz", name, hz), func(t *testing.T) {
				info, _ := Lookup(string(name))
				rate := info.SampleRate
				enc, dec := newPair(t, name, rate)
				_, reference := newPair(t, name, rate)
				tone := dsp.NewTone(hz, float64(rate), dsp.AmplitudeFromDBFS(-10))
				frames := make([][]int16, 6)
				for i := range frames {
					frames[i] = make([]int16, info.FrameSamples)
					tone.Fill(frames[i])
				}
				payloads := encodeAll(t, enc, frames)
				const lost = 5
				pcm := make([]int16, info.FrameSamples)
				want := make([]int16, info.FrameSamples)
				for i, payload := range payloads {
					if _, err := reference.Decode(payload, want); err != nil {
						t.Fatalf("reference Decode: %v", err)
					}
					if i < lost {
						if _, err := dec.Decode(payload, pcm); err != nil {
							t.Fatalf("Decode: %v", err)
						}
					}
				}
				if _, err := dec.DecodeLost(nil, pcm); err != nil {
					t.Fatalf("DecodeLost: %v", err)
				}
				hold := rate * concealHoldMs / 1000
				var signal, noise float64
				for i := range hold {
					signal += float64(want[i]) * float64(want[i])
					e := float64(want[i]) - float64(pcm[i])
					noise += e * e
				}
				snr := 10 * math.Log10(signal/noise)
				t.Logf("concealment vs lost audio: %.1f dB", snr)
				if snr < 20 {
					t.Fatalf("concealment is %.1f dB from the lost audio, want at least 20 dB", snr)
				}
			})
		}
	}
}

// packetise encodes frames into one continuous payload stream and cuts it
// into packets of ms milliseconds. G.711 and G.722 carry a fixed number of
// samples per octet, so cutting the stream anywhere gives valid packets.
func packetise(t *testing.T, name Name, rate int, frames [][]int16, ms int) [][]byte {
	t.Helper()
	enc, err := NewEncoder(name, rate, DefaultOpusOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var stream []byte
	for _, p := range encodeAll(t, enc, frames) {
		stream = append(stream, p...)
	}
	size := 8 * ms // both codecs send 8 octets per millisecond
	var packets [][]byte
	for len(stream) >= size {
		packets = append(packets, stream[:size])
		stream = stream[size:]
	}
	return packets
}

// TestDecodeLostConcealsOnePacket checks that a lost packet is concealed
// with as much audio as the packets around it carry, whatever the
// packetisation time (SDP ptime, or the Opus minptime the node offers):
// the caller advances the timestamp by one packet per loss, and libopus
// needs the exact missing duration for its PLC and to use the FEC data of
// the next packet.
func TestDecodeLostConcealsOnePacket(t *testing.T) {
	for _, name := range []Name{PCMU, PCMA, G722} {
		for _, ms := range []int{10, 20, 30, 40} {
			t.Run(fmt.Sprintf("%s/%dms", name, ms), func(t *testing.T) {
				info, _ := Lookup(string(name))
				rate := info.SampleRate
				dec, err := NewDecoder(name, rate)
				if err != nil {
					t.Fatal(err)
				}
				defer dec.Close()
				packets := packetise(t, name, rate, toneFrames(t, rate, 10), ms)
				pcm := make([]int16, 5760)
				for _, p := range packets[:4] {
					if _, err := dec.Decode(p, pcm); err != nil {
						t.Fatalf("Decode: %v", err)
					}
				}
				want := rate * ms / 1000
				for range 2 {
					n, err := dec.DecodeLost(nil, pcm)
					if err != nil {
						t.Fatalf("DecodeLost: %v", err)
					}
					if n != want {
						t.Fatalf("DecodeLost gave %d samples for a lost %d ms packet, want %d", n, ms, want)
					}
				}
				if _, err := dec.DecodeLost(nil, pcm[:want-1]); !errors.Is(err, ErrShortBuffer) {
					t.Fatalf("DecodeLost into %d samples: %v, want ErrShortBuffer", want-1, err)
				}
			})
		}
	}
}
