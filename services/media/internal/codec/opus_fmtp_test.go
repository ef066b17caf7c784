package codec

import (
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
