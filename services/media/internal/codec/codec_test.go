package codec

import (
	"errors"
	"testing"
)

func TestLookup(t *testing.T) {
	tests := []struct {
		query string
		want  Info
		ok    bool
	}{
		{"PCMU", Info{Name: PCMU, ClockRate: 8000, SampleRate: 8000, Channels: 1, StaticPT: 0, FrameSamples: 160}, true},
		{"pcma", Info{Name: PCMA, ClockRate: 8000, SampleRate: 8000, Channels: 1, StaticPT: 8, FrameSamples: 160}, true},
		{"OPUS", Info{Name: Opus, ClockRate: 48000, SampleRate: 48000, Channels: 2, StaticPT: DynamicPT, FrameSamples: 960}, true},
		{"g722", Info{Name: G722, ClockRate: 8000, SampleRate: 16000, Channels: 1, StaticPT: 9, FrameSamples: 320}, true},
		{"G729", Info{}, false},
		{"", Info{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			got, ok := Lookup(tt.query)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("Lookup(%q) = %+v, %v; want %+v, %v", tt.query, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestTimestampStep(t *testing.T) {
	tests := []struct {
		name Name
		want uint32
	}{
		{PCMU, 160},
		{G722, 160}, // RFC 3551: 8000 Hz clock although the audio is 16 kHz
		{Opus, 960},
	}
	for _, tt := range tests {
		t.Run(string(tt.name), func(t *testing.T) {
			info, _ := Lookup(string(tt.name))
			if got := info.TimestampStep(); got != tt.want {
				t.Fatalf("TimestampStep = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSupportedCoversEveryCodec(t *testing.T) {
	supported := Supported()
	for _, name := range []Name{Opus, G722, PCMU, PCMA} {
		t.Run(string(name), func(t *testing.T) {
			for _, info := range supported {
				if info.Name == name {
					enc, dec := newPair(t, name, info.SampleRate)
					if enc.Name() != name || dec.Name() != name {
						t.Fatalf("names %q/%q, want %q", enc.Name(), dec.Name(), name)
					}
					if enc.SampleRate() != info.SampleRate || dec.SampleRate() != info.SampleRate {
						t.Fatalf("rates %d/%d, want %d", enc.SampleRate(), dec.SampleRate(), info.SampleRate)
					}
					return
				}
			}
			t.Fatalf("%s missing from Supported()", name)
		})
	}
	supported[0].Name = "mutated"
	if Supported()[0].Name == "mutated" {
		t.Fatal("Supported returned shared state")
	}
}

func TestConstructorsReject(t *testing.T) {
	bad := DefaultOpusOptions()
	bad.Complexity = 11
	tests := []struct {
		desc        string
		name        Name
		rate        int
		opus        OpusOptions
		unsupported bool
	}{
		{"unknown codec", "G729", 8000, DefaultOpusOptions(), true},
		{"empty name", "", 8000, DefaultOpusOptions(), true},
		{"PCMU at 16 kHz", PCMU, 16000, DefaultOpusOptions(), true},
		{"PCMA at 48 kHz", PCMA, 48000, DefaultOpusOptions(), true},
		{"G722 at 8 kHz", G722, 8000, DefaultOpusOptions(), true},
		{"opus at 44.1 kHz", Opus, 44100, DefaultOpusOptions(), true},
		{"opus complexity 11", Opus, 48000, bad, false},
		{"opus bitrate 0", Opus, 48000, OpusOptions{Complexity: 5}, false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := NewEncoder(tt.name, tt.rate, tt.opus)
			if err == nil {
				t.Fatal("NewEncoder succeeded")
			}
			if got := errors.Is(err, ErrUnsupported); got != tt.unsupported {
				t.Fatalf("NewEncoder error %v: errors.Is(ErrUnsupported) = %v, want %v", err, got, tt.unsupported)
			}
			if !tt.unsupported {
				return
			}
			if _, err := NewDecoder(tt.name, tt.rate); !errors.Is(err, ErrUnsupported) {
				t.Fatalf("NewDecoder error %v, want ErrUnsupported", err)
			}
		})
	}
}

func TestNamesAreCaseInsensitive(t *testing.T) {
	for _, name := range []Name{"pcmu", "Pcma", "OPUS", "g722"} {
		t.Run(string(name), func(t *testing.T) {
			info, _ := Lookup(string(name))
			enc, err := NewEncoder(name, info.SampleRate, DefaultOpusOptions())
			if err != nil {
				t.Fatalf("NewEncoder: %v", err)
			}
			defer enc.Close()
			if enc.Name() != info.Name {
				t.Fatalf("Name() = %q, want canonical %q", enc.Name(), info.Name)
			}
		})
	}
}

func TestEncodeRejectsBadBuffers(t *testing.T) {
	for _, tt := range codecCases {
		t.Run(caseName(tt.name, tt.rate), func(t *testing.T) {
			enc, dec := newPair(t, tt.name, tt.rate)
			frame := make([]int16, FrameSamplesAt(tt.rate))
			if _, err := enc.Encode(frame[:len(frame)-1], make([]byte, OpusMaxPacketBytes)); !errors.Is(err, ErrFrameSize) {
				t.Errorf("Encode short frame: %v, want ErrFrameSize", err)
			}
			if _, err := enc.Encode(frame, nil); !errors.Is(err, ErrShortBuffer) {
				t.Errorf("Encode into nil: %v, want ErrShortBuffer", err)
			}
			if _, err := dec.DecodeLost(nil, frame[:len(frame)-1]); !errors.Is(err, ErrShortBuffer) {
				t.Errorf("DecodeLost into short pcm: %v, want ErrShortBuffer", err)
			}
			if _, err := dec.Decode(make([]byte, len(frame)), frame[:1]); !errors.Is(err, ErrShortBuffer) {
				t.Errorf("Decode into short pcm: %v, want ErrShortBuffer", err)
			}
		})
	}
}

func TestOpusAfterClose(t *testing.T) {
	enc, err := NewEncoder(Opus, 16000, DefaultOpusOptions())
	if err != nil {
		t.Fatal(err)
	}
	dec, err := NewDecoder(Opus, 16000)
	if err != nil {
		t.Fatal(err)
	}
	enc.Close()
	dec.Close()
	if _, err := enc.Encode(make([]int16, 320), make([]byte, 100)); !errors.Is(err, ErrClosed) {
		t.Errorf("Encode after Close: %v, want ErrClosed", err)
	}
	if _, err := dec.Decode([]byte{0x08}, make([]int16, 320)); !errors.Is(err, ErrClosed) {
		t.Errorf("Decode after Close: %v, want ErrClosed", err)
	}
	if _, err := dec.DecodeLost(nil, make([]int16, 320)); !errors.Is(err, ErrClosed) {
		t.Errorf("DecodeLost after Close: %v, want ErrClosed", err)
	}
}

func TestOpusOptionsApplied(t *testing.T) {
	tests := []struct {
		desc string
		opts OpusOptions
	}{
		{"defaults", DefaultOpusOptions()},
		{"cheap without fec", OpusOptions{Complexity: 0, BitrateBPS: 12000, FEC: false, PacketLossPercent: 0, DTX: true}},
		{"best", OpusOptions{Complexity: 10, BitrateBPS: 64000, FEC: true, PacketLossPercent: 30}},
		{"top mono bitrate", OpusOptions{Complexity: 5, BitrateBPS: 300000}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			enc, err := newOpusEncoder(48000, tt.opts)
			if err != nil {
				t.Fatalf("newOpusEncoder: %v", err)
			}
			checks := []struct {
				what string
				get  func() (any, error)
				want any
			}{
				{"complexity", func() (any, error) { return enc.enc.Complexity() }, tt.opts.Complexity},
				{"bitrate", func() (any, error) { return enc.enc.Bitrate() }, tt.opts.BitrateBPS},
				{"fec", func() (any, error) { return enc.enc.InBandFEC() }, tt.opts.FEC},
				{"packet loss", func() (any, error) { return enc.enc.PacketLossPerc() }, tt.opts.PacketLossPercent},
				{"dtx", func() (any, error) { return enc.enc.DTX() }, tt.opts.DTX},
			}
			for _, c := range checks {
				got, err := c.get()
				if err != nil || got != c.want {
					t.Errorf("%s = %v (%v), want %v", c.what, got, err, c.want)
				}
			}
		})
	}
}

func TestDefaultOpusOptions(t *testing.T) {
	want := OpusOptions{Complexity: 5, BitrateBPS: 24000, FEC: true, PacketLossPercent: 10, DTX: false}
	if got := DefaultOpusOptions(); got != want {
		t.Fatalf("DefaultOpusOptions() = %+v, want %+v", got, want)
	}
}
