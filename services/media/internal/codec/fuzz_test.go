package codec

import (
	"testing"
)

// FuzzDecode feeds arbitrary payloads, as a hostile or broken peer could
// send, to every decoder: each must return an error or samples, never
// panic, and never claim more samples than the buffer holds. The same
// payload then serves as the "next" packet for concealment, which must
// fill in exactly one packet's worth even when next is garbage.
func FuzzDecode(f *testing.F) {
	for _, tt := range codecCases {
		enc, err := NewEncoder(tt.name, tt.rate, DefaultOpusOptions())
		if err != nil {
			f.Fatal(err)
		}
		payload := make([]byte, OpusMaxPacketBytes)
		n, err := enc.Encode(toneFrames(f, tt.rate, 1)[0], payload)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(payload[:n])
		enc.Close()
	}
	f.Add([]byte{})
	f.Add([]byte{0xFF})
	f.Add([]byte{0xFC, 0xFF, 0xFE})                   // opus: code 3, 63 frames claimed
	f.Add([]byte{0x0B, 0x01, 0x02, 0x03, 0x04, 0x05}) // opus: code 3 with padding flag
	f.Add(make([]byte, 1500))

	decoders := make([]Decoder, 0, len(codecCases))
	for _, tt := range codecCases {
		dec, err := NewDecoder(tt.name, tt.rate)
		if err != nil {
			f.Fatal(err)
		}
		decoders = append(decoders, dec)
	}
	// 120 ms at 48 kHz, the longest packet Opus can describe.
	pcm := make([]int16, 5760)
	// lost is how much each decoder's DecodeLost must conceal: as much as
	// the last packet it decoded, one frame before any.
	lost := make([]int, len(decoders))
	for i, dec := range decoders {
		lost[i] = FrameSamplesAt(dec.SampleRate())
	}

	f.Fuzz(func(t *testing.T, payload []byte) {
		for i, dec := range decoders {
			frame := FrameSamplesAt(dec.SampleRate())
			n, err := dec.Decode(payload, pcm)
			if err == nil && (n < 0 || n > len(pcm)) {
				t.Fatalf("%s Decode reported %d samples for a %d-sample buffer", dec.Name(), n, len(pcm))
			}
			if err == nil && n > 0 {
				lost[i] = n
			}
			n, err = dec.Decode(payload, pcm[:frame])
			if err == nil && n > frame {
				t.Fatalf("%s Decode overran a one-frame buffer: %d samples", dec.Name(), n)
			}
			if err == nil && n > 0 {
				lost[i] = n
			}
			n, err = dec.DecodeLost(payload, pcm)
			if err == nil && n != lost[i] {
				t.Fatalf("%s DecodeLost gave %d samples, want %d as the last packet", dec.Name(), n, lost[i])
			}
		}
	})
}

// FuzzResample checks arbitrary input lengths and content against every
// converter: output never exceeds OutputLen and Process never panics.
func FuzzResample(f *testing.F) {
	f.Add([]byte{}, uint16(0))
	f.Add([]byte{0xFF, 0x7F, 0x00, 0x80}, uint16(3))
	f.Add(make([]byte, 1920), uint16(100))
	resamplers := make([]*Resampler, 0, len(resamplePairs))
	for _, pair := range resamplePairs {
		r, err := NewResampler(pair[0], pair[1])
		if err != nil {
			f.Fatal(err)
		}
		resamplers = append(resamplers, r)
	}
	f.Fuzz(func(t *testing.T, raw []byte, outLen uint16) {
		in := make([]int16, len(raw)/2)
		for i := range in {
			in[i] = int16(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
		}
		for _, r := range resamplers {
			out := make([]int16, min(int(outLen), r.OutputLen(len(in))))
			if n := r.Process(in, out); n < 0 || n > len(out) {
				t.Fatalf("%d-%d Process wrote %d into %d", r.From(), r.To(), n, len(out))
			}
		}
	})
}
