package codec

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hraban/opus"
)

// A receiver's Opus fmtp (RFC 7587 §6.1) caps the node's own encoder
// settings: a bitrate above maxaveragebitrate, FEC the decoder does not
// use, DTX it does not want are given up; cbr and maxplaybackrate are
// taken. Nothing in it raises what the node is configured for.
func TestOpusOptionsForReceiverKeepToItsFmtp(t *testing.T) {
	own := OpusOptions{Complexity: 5, BitrateBPS: 24000, FEC: true, PacketLossPercent: 10, DTX: true}
	tests := []struct {
		name string
		own  OpusOptions
		fmtp string
		want OpusOptions
	}{
		{name: "no fmtp: neither FEC nor DTX (both default to 0)", own: own, fmtp: "",
			want: OpusOptions{Complexity: 5, BitrateBPS: 24000, PacketLossPercent: 10}},
		{name: "FEC and DTX wanted", own: own, fmtp: "useinbandfec=1;usedtx=1",
			want: own},
		{name: "FEC refused", own: own, fmtp: "minptime=10;useinbandfec=0;usedtx=1",
			want: OpusOptions{Complexity: 5, BitrateBPS: 24000, PacketLossPercent: 10, DTX: true}},
		{name: "bitrate capped", own: own, fmtp: "maxaveragebitrate=12000; useinbandfec=1",
			want: OpusOptions{Complexity: 5, BitrateBPS: 12000, FEC: true, PacketLossPercent: 10}},
		{name: "a cap above our bitrate leaves it", own: own, fmtp: "maxaveragebitrate=64000;useinbandfec=1",
			want: OpusOptions{Complexity: 5, BitrateBPS: 24000, FEC: true, PacketLossPercent: 10}},
		{name: "cbr and playback rate", own: own, fmtp: "maxplaybackrate=16000;sprop-maxcapturerate=16000;cbr=1",
			want: OpusOptions{Complexity: 5, BitrateBPS: 24000, PacketLossPercent: 10, CBR: true, MaxPlaybackRateHz: 16000}},
		{name: "out of range values ignored", own: own, fmtp: "maxaveragebitrate=100;maxplaybackrate=4000;cbr=x",
			want: OpusOptions{Complexity: 5, BitrateBPS: 24000, PacketLossPercent: 10}},
		{name: "DTX the node does not do stays off", own: OpusOptions{Complexity: 5, BitrateBPS: 24000}, fmtp: "usedtx=1;useinbandfec=1",
			want: OpusOptions{Complexity: 5, BitrateBPS: 24000}},
		{name: "names in any case", own: own, fmtp: "MaxAverageBitrate=8000;UseInbandFEC=1",
			want: OpusOptions{Complexity: 5, BitrateBPS: 8000, FEC: true, PacketLossPercent: 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.own.ForReceiver(tc.fmtp); got != tc.want {
				t.Fatalf("ForReceiver(%q) = %+v, want %+v", tc.fmtp, got, tc.want)
			}
		})
	}
}

// The encoder runs as the options say: bitrate, FEC, DTX, constant
// bitrate and the bandwidth cap are all set on it.
func TestOpusEncoderRunsAsItsOptionsSay(t *testing.T) {
	opts := DefaultOpusOptions().ForReceiver("maxaveragebitrate=12000;maxplaybackrate=8000;cbr=1;useinbandfec=0")
	enc, err := NewEncoder(Opus, 16000, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(enc.Close)
	o := enc.(*opusEncoder).enc
	bitrate, _ := o.Bitrate()
	fec, _ := o.InBandFEC()
	vbr, _ := o.VBR()
	bw, _ := o.MaxBandwidth()
	if bitrate != 12000 || fec || vbr || bw != opus.Narrowband {
		t.Fatalf("encoder runs at %d bps, FEC %v, VBR %v, max bandwidth %d; want 12000, no FEC, CBR, narrowband", bitrate, fec, vbr, bw)
	}
	// At a constant 12 kbit/s, every 20 ms packet is 30 bytes.
	pcm := make([]int16, FrameSamplesAt(16000))
	for i := range pcm {
		pcm[i] = int16((i * 37 % 200) * 50)
	}
	out := make([]byte, OpusMaxPacketBytes)
	for range 10 {
		n, err := enc.Encode(pcm, out)
		if err != nil {
			t.Fatal(err)
		}
		if n != 30 {
			t.Fatalf("CBR packet of %d bytes at 12 kbit/s, want 30", n)
		}
	}
}

// RFC 7587 §6.1, maxplaybackrate: only signals up to that sampling rate
// can be played back, and "an encoder SHOULD NOT encode frequencies above
// the audio bandwidth specified by maxplaybackrate/2". The cap must be
// the widest Opus bandwidth (RFC 6716 §2: 4, 6, 8, 12, 20 kHz of audio)
// within rate/2, rounding down: a phone that renders at 32 kHz (16 kHz
// of audio) is sent superwideband, 12 kHz, not fullband's 20; one at
// 22050 Hz wideband, 8 kHz, not superwideband past its 11 kHz.
func TestMaxPlaybackRateCapsBandwidthAtHalfTheRate(t *testing.T) {
	tests := []struct {
		rate int
		want opus.Bandwidth
	}{
		{rate: 8000, want: opus.Narrowband},
		{rate: 10000, want: opus.Narrowband},    // 5 kHz: mediumband is 6
		{rate: 14000, want: opus.Mediumband},    // 7 kHz: wideband is 8
		{rate: 22050, want: opus.Wideband},      // 11 kHz: superwideband is 12
		{rate: 32000, want: opus.SuperWideband}, // 16 kHz: fullband is 20
		{rate: 48000, want: opus.Fullband},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.rate), func(t *testing.T) {
			opts := DefaultOpusOptions().ForReceiver(fmt.Sprintf("maxplaybackrate=%d", tc.rate))
			enc, err := NewEncoder(Opus, 48000, opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(enc.Close)
			got, err := enc.(*opusEncoder).enc.MaxBandwidth()
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("maxplaybackrate=%d: encoder's max bandwidth %d, want %d (no audio above %d Hz)", tc.rate, got, tc.want, tc.rate/2)
			}
		})
	}
}

// An Opus encoder follows a receiver's new fmtp in place (a re-INVITE
// may change it): the settings change from the next frame, with no new
// encoder. Options out of range change nothing, a closed encoder is not
// reconfigured, and the encoders that take no options do not offer it.
func TestOpusEncoderReconfiguresInPlace(t *testing.T) {
	enc, err := NewEncoder(Opus, 16000, DefaultOpusOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(enc.Close)
	r, ok := enc.(Reconfigurer)
	if !ok {
		t.Fatal("Opus encoder is not a Reconfigurer")
	}
	pcm := make([]int16, FrameSamplesAt(16000))
	for i := range pcm {
		pcm[i] = int16((i * 37 % 200) * 50)
	}
	out := make([]byte, OpusMaxPacketBytes)
	if _, err := enc.Encode(pcm, out); err != nil {
		t.Fatal(err)
	}
	if err := r.Reconfigure(DefaultOpusOptions().ForReceiver("maxaveragebitrate=12000;maxplaybackrate=8000;cbr=1")); err != nil {
		t.Fatal(err)
	}
	o := enc.(*opusEncoder).enc
	bitrate, _ := o.Bitrate()
	fec, _ := o.InBandFEC()
	vbr, _ := o.VBR()
	bw, _ := o.MaxBandwidth()
	if bitrate != 12000 || fec || vbr || bw != opus.Narrowband {
		t.Fatalf("reconfigured encoder runs at %d bps, FEC %v, VBR %v, max bandwidth %d; want 12000, no FEC, CBR, narrowband", bitrate, fec, vbr, bw)
	}
	// From the next frame on, every 20 ms packet is the 30 bytes of a
	// constant 12 kbit/s.
	for i := range 10 {
		n, err := enc.Encode(pcm, out)
		if err != nil {
			t.Fatal(err)
		}
		if n != 30 {
			t.Fatalf("packet %d after reconfiguring: %d bytes, want 30", i, n)
		}
	}

	bad := DefaultOpusOptions()
	bad.BitrateBPS = 1000
	if err := r.Reconfigure(bad); err == nil {
		t.Fatal("bitrate of 1000 bps taken")
	}
	if got, _ := o.Bitrate(); got != 12000 {
		t.Fatalf("refused options changed the bitrate to %d", got)
	}
	enc.Close()
	if err := r.Reconfigure(DefaultOpusOptions()); !errors.Is(err, ErrClosed) {
		t.Fatalf("reconfigure after close: %v, want ErrClosed", err)
	}

	for _, c := range []struct {
		name Name
		rate int
	}{{PCMU, 8000}, {PCMA, 8000}, {G722, 16000}} {
		enc, err := NewEncoder(c.name, c.rate, DefaultOpusOptions())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := enc.(Reconfigurer); ok {
			t.Errorf("%s encoder is a Reconfigurer; it takes no options", c.name)
		}
		enc.Close()
	}
}

// An encoder reconfigured for one receiver's fmtp, then another's, then
// the first's again, runs with every setting the first asks for, not
// with any the second left behind.
func TestOpusEncoderReconfiguredBackRunsAsTheFirstFmtpSays(t *testing.T) {
	enc, err := NewEncoder(Opus, 16000, DefaultOpusOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(enc.Close)
	r := enc.(Reconfigurer)
	o := enc.(*opusEncoder).enc
	own := DefaultOpusOptions()
	own.DTX = true // so that a receiver's usedtx=1 turns it on
	first := own.ForReceiver("maxaveragebitrate=12000;maxplaybackrate=8000;cbr=1")
	second := own.ForReceiver("maxaveragebitrate=20000;useinbandfec=1;usedtx=1")
	for i, opts := range []OpusOptions{first, second, first} {
		if err := r.Reconfigure(opts); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		bitrate, _ := o.Bitrate()
		complexity, _ := o.Complexity()
		fec, _ := o.InBandFEC()
		loss, _ := o.PacketLossPerc()
		dtx, _ := o.DTX()
		vbr, _ := o.VBR()
		bw, _ := o.MaxBandwidth()
		if bitrate != opts.BitrateBPS || complexity != opts.Complexity || fec != opts.FEC || loss != opts.PacketLossPercent ||
			dtx != opts.DTX || vbr == opts.CBR || bw != maxBandwidth(opts.MaxPlaybackRateHz) {
			t.Fatalf("step %d: encoder at %d bps, complexity %d, FEC %v, loss %d%%, DTX %v, VBR %v, max bandwidth %d; want %+v",
				i, bitrate, complexity, fec, loss, dtx, vbr, bw, opts)
		}
	}
}
