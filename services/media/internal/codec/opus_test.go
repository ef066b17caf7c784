package codec

import (
	"errors"
	"fmt"
	"testing"

	"callgrid.dev/services/media/internal/dsp"
	"github.com/hraban/opus"
)

// opusPackets encodes a continuous test tone into Opus packets of ms
// milliseconds with in-band FEC on, as a peer honouring the node's
// minptime=10 or a longer ptime would send them. The package's own encoder
// only makes 20 ms packets, so libopus is driven directly.
func opusPackets(t *testing.T, rate, ms, count int) [][]byte {
	t.Helper()
	enc, err := opus.NewEncoder(rate, 1, opus.AppVoIP)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []func() error{
		func() error { return enc.SetBitrate(DefaultOpusBitrateBPS) },
		func() error { return enc.SetInBandFEC(true) },
		func() error { return enc.SetPacketLossPerc(20) },
	} {
		if err := set(); err != nil {
			t.Fatal(err)
		}
	}
	tone := dsp.NewTone(testToneHz, float64(rate), dsp.AmplitudeFromDBFS(-10))
	pcm := make([]int16, rate*ms/1000)
	packets := make([][]byte, count)
	for i := range packets {
		tone.Fill(pcm)
		buf := make([]byte, 4000)
		n, err := enc.Encode(pcm, buf)
		if err != nil {
			t.Fatalf("encode %d ms: %v", ms, err)
		}
		packets[i] = buf[:n]
	}
	return packets
}

// TestOpusDecodeLostConcealsOnePacket loses one packet of a stream at each
// Opus frame duration a peer may send and checks that both PLC and FEC
// recovery produce exactly the lost duration (RFC 6716 §4.4 and the
// opus_decode contract: the frame size must be the missing duration), and
// that the FEC data in the next packet is actually used, so the tone comes
// through instead of a fading extrapolation.
func TestOpusDecodeLostConcealsOnePacket(t *testing.T) {
	const rate = 16000
	for _, ms := range []int{5, 10, 20, 40, 60} {
		for _, withNext := range []bool{false, true} {
			t.Run(fmt.Sprintf("%dms/next=%v", ms, withNext), func(t *testing.T) {
				packets := opusPackets(t, rate, ms, 8)
				dec, err := NewDecoder(Opus, rate)
				if err != nil {
					t.Fatal(err)
				}
				defer dec.Close()
				pcm := make([]int16, 5760)
				const lost = 6
				for _, p := range packets[:lost] {
					if _, err := dec.Decode(p, pcm); err != nil {
						t.Fatalf("Decode: %v", err)
					}
				}
				var next []byte
				if withNext {
					next = packets[lost+1]
				}
				n, err := dec.DecodeLost(next, pcm)
				if err != nil {
					t.Fatalf("DecodeLost: %v", err)
				}
				if want := rate * ms / 1000; n != want {
					t.Fatalf("DecodeLost gave %d samples for a lost %d ms packet, want %d", n, ms, want)
				}
				if withNext && ms >= 10 {
					// FEC rebuilds the lost packet at a lower rate: a clean
					// tone, unlike PLC, which fades out. Only SILK carries
					// FEC, and its frames are 10 ms or longer.
					checkTone(t, pcm[:n], rate, 15)
				}
				if n, err := dec.Decode(packets[lost+1], pcm); err != nil || n != rate*ms/1000 {
					t.Fatalf("Decode after the loss: %d, %v", n, err)
				}
			})
		}
	}
}

// TestOpusDecodeLostCorruptNext checks that a corrupt packet after a loss
// still gets the lost frame concealed: it carries no usable FEC data, so
// the decoder must fall back to PLC rather than leave a hole.
func TestOpusDecodeLostCorruptNext(t *testing.T) {
	const rate = 16000
	enc, dec := newPair(t, Opus, rate)
	pcm := make([]int16, FrameSamplesAt(rate))
	for _, p := range encodeAll(t, enc, toneFrames(t, rate, 6)) {
		if _, err := dec.Decode(p, pcm); err != nil {
			t.Fatalf("Decode: %v", err)
		}
	}
	for _, next := range [][]byte{
		{0xFF, 0xFF},             // code 3 claiming 63 frames, 1.26 s of audio
		{0x03},                   // code 3 without its frame count byte
		{0x01, 0xFF, 0xFF, 0xFF}, // code 1: two equal frames in an odd length
	} {
		t.Run(fmt.Sprintf("%x", next), func(t *testing.T) {
			if _, err := dec.Decode(next, pcm); err == nil {
				t.Fatal("Decode accepted the corrupt packet")
			}
			n, err := dec.DecodeLost(next, pcm)
			if err != nil {
				t.Fatalf("DecodeLost: %v", err)
			}
			if n != len(pcm) {
				t.Fatalf("DecodeLost gave %d samples, want %d", n, len(pcm))
			}
		})
	}
}

// TestOpusRejectsUnreachableBitrate checks that a bitrate the mono encoder
// cannot run at is refused rather than silently lowered: libopus caps
// OPUS_SET_BITRATE at 300 kbit/s per channel, although RFC 6716 quotes up
// to 510 kbit/s (which only stereo reaches).
func TestOpusRejectsUnreachableBitrate(t *testing.T) {
	for _, bps := range []int{300001, 400000, 510000} {
		t.Run(fmt.Sprint(bps), func(t *testing.T) {
			opts := DefaultOpusOptions()
			opts.BitrateBPS = bps
			enc, err := NewEncoder(Opus, 48000, opts)
			if err == nil {
				got, _ := enc.(*opusEncoder).enc.Bitrate()
				enc.Close()
				t.Fatalf("NewEncoder accepted %d bps and runs at %d bps", bps, got)
			}
			if errors.Is(err, ErrUnsupported) {
				t.Fatalf("NewEncoder error %v: an option error, not ErrUnsupported", err)
			}
		})
	}
}
