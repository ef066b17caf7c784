package codec

import (
	"fmt"
	"testing"
)

func BenchmarkEncode(b *testing.B) {
	benches := []struct {
		name       Name
		rate       int
		complexity int
	}{
		{PCMU, 8000, 0},
		{PCMA, 8000, 0},
		{G722, 16000, 0},
		{Opus, 8000, 0},
		{Opus, 8000, 5},
		{Opus, 8000, 10},
		{Opus, 16000, 5},
		{Opus, 48000, 5},
	}
	for _, bb := range benches {
		b.Run(fmt.Sprintf("%s/%d/c%d", bb.name, bb.rate, bb.complexity), func(b *testing.B) {
			opts := DefaultOpusOptions()
			opts.Complexity = bb.complexity
			enc, err := NewEncoder(bb.name, bb.rate, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer enc.Close()
			frames := toneFrames(b, bb.rate, 50)
			payload := make([]byte, OpusMaxPacketBytes)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if _, err := enc.Encode(frames[i%len(frames)], payload); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, tt := range codecCases {
		b.Run(caseName(tt.name, tt.rate), func(b *testing.B) {
			enc, err := NewEncoder(tt.name, tt.rate, DefaultOpusOptions())
			if err != nil {
				b.Fatal(err)
			}
			defer enc.Close()
			dec, err := NewDecoder(tt.name, tt.rate)
			if err != nil {
				b.Fatal(err)
			}
			defer dec.Close()
			var payloads [][]byte
			buf := make([]byte, OpusMaxPacketBytes)
			for _, frame := range toneFrames(b, tt.rate, 50) {
				n, err := enc.Encode(frame, buf)
				if err != nil {
					b.Fatal(err)
				}
				payloads = append(payloads, append([]byte(nil), buf[:n]...))
			}
			pcm := make([]int16, FrameSamplesAt(tt.rate))
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec.Decode(payloads[i%len(payloads)], pcm); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkDecodeLost(b *testing.B) {
	for _, tt := range codecCases {
		b.Run(caseName(tt.name, tt.rate), func(b *testing.B) {
			dec, err := NewDecoder(tt.name, tt.rate)
			if err != nil {
				b.Fatal(err)
			}
			defer dec.Close()
			pcm := make([]int16, FrameSamplesAt(tt.rate))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec.DecodeLost(nil, pcm); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkResample(b *testing.B) {
	for _, pair := range resamplePairs {
		from, to := pair[0], pair[1]
		b.Run(fmt.Sprintf("%d-%d", from, to), func(b *testing.B) {
			r, err := NewResampler(from, to)
			if err != nil {
				b.Fatal(err)
			}
			in := toneFrames(b, from, 1)[0]
			out := make([]int16, r.OutputLen(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				r.Process(in, out)
			}
		})
	}
}
