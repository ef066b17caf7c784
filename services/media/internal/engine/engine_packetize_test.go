package engine

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/dsp"
)

// The packet time media the node encodes goes out at: what the endpoint
// asked for when the codec carries it within its maxptime, else 20 ms, or
// the longest the codec carries within a maxptime under 20 ms.
func TestPacketTimeFor(t *testing.T) {
	pcmu, _ := codec.Lookup("PCMU")
	opus, _ := codec.Lookup("opus")
	tests := []struct {
		name            string
		info            codec.Info
		ptime, maxptime int
		want            time.Duration
	}{
		{name: "none asked", info: pcmu, want: 20 * time.Millisecond},
		{name: "G.711 whole 10 ms", info: pcmu, ptime: 30, want: 30 * time.Millisecond},
		{name: "G.711 up to 150 ms", info: pcmu, ptime: 150, want: 150 * time.Millisecond},
		{name: "G.711 past 150 ms", info: pcmu, ptime: 160, want: 20 * time.Millisecond},
		{name: "G.711 not whole 10 ms", info: pcmu, ptime: 15, want: 20 * time.Millisecond},
		{name: "G.711 within maxptime", info: pcmu, ptime: 40, maxptime: 40, want: 40 * time.Millisecond},
		{name: "G.711 past maxptime", info: pcmu, ptime: 60, maxptime: 40, want: 20 * time.Millisecond},
		{name: "G.711 maxptime under 20 ms", info: pcmu, maxptime: 15, want: 10 * time.Millisecond},
		{name: "Opus 40 ms", info: opus, ptime: 40, want: 40 * time.Millisecond},
		{name: "Opus 10 ms", info: opus, ptime: 10, want: 20 * time.Millisecond},
		{name: "Opus 30 ms", info: opus, ptime: 30, want: 20 * time.Millisecond},
		{name: "Opus 80 ms", info: opus, ptime: 80, want: 20 * time.Millisecond},
		{name: "Opus past maxptime", info: opus, ptime: 60, maxptime: 50, want: 20 * time.Millisecond},
		{name: "Opus maxptime under 20 ms", info: opus, maxptime: 10, want: 20 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := packetTimeFor(tc.info, tc.ptime, tc.maxptime); got != tc.want {
				t.Fatalf("ptime %d maxptime %d: %v, want %v", tc.ptime, tc.maxptime, got, tc.want)
			}
		})
	}
}

// Opus frames go in one code 3 packet (RFC 6716 §3.2.5): the TOC byte the
// frames share, the count, the lengths of all but the last when they
// differ (in two bytes from 252 up), then the frames.
func TestPackOpusFrames(t *testing.T) {
	long := append([]byte{0x08}, bytes.Repeat([]byte{0xaa}, 300)...)
	tests := []struct {
		name    string
		packets [][]byte
		want    []byte
		err     error
	}{
		{name: "same sizes", packets: [][]byte{{0x08, 1, 2}, {0x08, 3, 4}}, want: []byte{0x0b, 2, 1, 2, 3, 4}},
		{name: "different sizes", packets: [][]byte{{0x08, 1, 2, 3}, {0x08, 4}, {0x08, 5, 6}}, want: []byte{0x0b, 0x83, 3, 1, 1, 2, 3, 4, 5, 6}},
		{name: "a long frame", packets: [][]byte{long, {0x08, 7}}, want: append(append([]byte{0x0b, 0x82, 252, 12}, long[1:]...), 7)},
		{name: "configurations differ", packets: [][]byte{{0x08, 1}, {0x10, 2}}, err: errOpusFramesDiffer},
		{name: "not one frame each", packets: [][]byte{{0x09, 1}, {0x09, 2}}, err: errOpusFramesDiffer},
		{name: "no room", packets: [][]byte{long, long, long, long, long}, err: codec.ErrShortBuffer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := make([]byte, 1000)
			n, err := packOpusFrames(out, tc.packets)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if tc.err == nil && !bytes.Equal(out[:n], tc.want) {
				t.Fatalf("packed % x, want % x", out[:n], tc.want)
			}
		})
	}
}

// queueFrame encodes nothing: it queues frame as if an encoder had just
// made it, at timestamp ts.
func queueFrame(t *testing.T, p *packetizer, frame []byte, ts uint32) {
	t.Helper()
	n := copy(p.space(), frame)
	if n != len(frame) {
		t.Fatalf("room for %d of a %d-byte frame", n, len(frame))
	}
	p.add(n, ts)
}

// packet is what packetizer.next gave.
type packet struct {
	payload   []byte
	ts, ticks uint32
}

func takePacket(t *testing.T, p *packetizer) packet {
	t.Helper()
	out := make([]byte, maxPacket)
	n, ts, ticks, err := p.next(out)
	if err != nil {
		t.Fatal(err)
	}
	return packet{out[:n], ts, ticks}
}

// A sample-based codec's 20 ms frames are one octet stream that packets
// of any whole 10 ms are cut from, each stamped where its first octet is;
// what is left waits for the next frame, or goes out short when flushed.
func TestPacketizerCutsTheOctetStream(t *testing.T) {
	p := newPacketizer(pcmu())
	p.setPacketTime(30 * time.Millisecond)
	frame := func(fill byte) []byte { return bytes.Repeat([]byte{fill}, 160) }
	queueFrame(t, p, frame(1), 1000)
	if p.ready() {
		t.Fatal("20 ms queued makes a 30 ms packet")
	}
	queueFrame(t, p, frame(2), 1160)
	got := takePacket(t, p)
	want := append(frame(1), frame(2)[:80]...)
	if !bytes.Equal(got.payload, want) || got.ts != 1000 || got.ticks != 240 {
		t.Fatalf("first packet: %d octets at %d lasting %d; want 240 at 1000", len(got.payload), got.ts, got.ticks)
	}
	if p.ready() || p.queuedTicks() != 80 {
		t.Fatalf("after it: ready %v, %d ticks queued; want the 10 ms left", p.ready(), p.queuedTicks())
	}
	p.setPacketTime(10 * time.Millisecond) // a re-INVITE: what is left goes in the new packets
	if got := takePacket(t, p); !bytes.Equal(got.payload, frame(2)[:80]) || got.ts != 1240 || got.ticks != 80 {
		t.Fatalf("the 10 ms left: %d octets at %d", len(got.payload), got.ts)
	}
	queueFrame(t, p, frame(3), 1320)
	for i, ts := range []uint32{1320, 1400} {
		if got := takePacket(t, p); !bytes.Equal(got.payload, frame(3)[:80]) || got.ts != ts {
			t.Fatalf("10 ms packet %d: %d octets of %v at %d, want 80 at %d", i, len(got.payload), got.payload[:1], got.ts, ts)
		}
	}
	if p.pending() {
		t.Fatal("octets left over")
	}
}

// Opus frames are packed several to a packet (RFC 6716 code 3), one alone
// is sent as the encoder made it, and frames the encoder made in another
// configuration than the first go in the next packet rather than fail it.
func TestPacketizerPacksOpusFrames(t *testing.T) {
	p := newPacketizer(opus())
	p.setPacketTime(60 * time.Millisecond)
	nb := []byte{0x08, 1, 2} // a SILK narrowband 20 ms frame's TOC, and its data
	wb := []byte{0x48, 3}    // SILK wideband
	queueFrame(t, p, nb, 0)
	queueFrame(t, p, nb, 960)
	if p.ready() {
		t.Fatal("40 ms queued makes a 60 ms packet")
	}
	queueFrame(t, p, nb, 1920)
	if got := takePacket(t, p); !bytes.Equal(got.payload, []byte{0x0b, 3, 1, 2, 1, 2, 1, 2}) || got.ts != 0 || got.ticks != 2880 {
		t.Fatalf("three frames: % x at %d lasting %d", got.payload, got.ts, got.ticks)
	}
	queueFrame(t, p, nb, 2880)
	queueFrame(t, p, nb, 3840)
	queueFrame(t, p, wb, 4800)
	if got := takePacket(t, p); !bytes.Equal(got.payload, []byte{0x0b, 2, 1, 2, 1, 2}) || got.ts != 2880 || got.ticks != 1920 {
		t.Fatalf("two frames of one configuration: % x at %d lasting %d", got.payload, got.ts, got.ticks)
	}
	if p.ready() || !p.pending() {
		t.Fatal("the wideband frame should be left, short of a packet")
	}
	if got := takePacket(t, p); !bytes.Equal(got.payload, wb) || got.ts != 4800 || got.ticks != 960 {
		t.Fatalf("the frame left, flushed: % x at %d lasting %d", got.payload, got.ts, got.ticks)
	}
}

// What packOpusFrames makes is what a real decoder takes, and decodes to
// the very audio of the frames decoded one by one: equal sizes (CBR),
// sizes that differ (VBR) with lengths from 252 up in two bytes, and the
// empty frames of DTX silence among them.
func TestPackedOpusFramesDecodeAsTheFrames(t *testing.T) {
	loud := codec.DefaultOpusOptions()
	loud.BitrateBPS = 300000 // frames past 252 bytes at 16 kHz
	dtx := codec.DefaultOpusOptions()
	dtx.DTX = true
	tests := []struct {
		name string
		rate int
		opts codec.OpusOptions
	}{
		{name: "narrowband", rate: 8000, opts: codec.DefaultOpusOptions()},
		{name: "wideband, long frames", rate: 16000, opts: loud},
		{name: "with DTX", rate: 8000, opts: dtx},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := codec.NewEncoder(codec.Opus, tc.rate, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer enc.Close()
			packed, single := newTestDecoder(t, codec.Opus, 48000), newTestDecoder(t, codec.Opus, 48000)
			tone := dsp.NewTone(ToneHz, float64(tc.rate), dsp.AmplitudeFromDBFS(-10))
			pcm := make([]int16, codec.FrameSamplesAt(tc.rate))
			out, got, want := make([]byte, maxPacket), make([]int16, 6000), make([]int16, 6000)
			var long, vbr, empty bool
			for i := range 40 {
				frames := make([][]byte, 2+i%2) // 40 and 60 ms
				for j := range frames {
					if tc.opts.DTX && i%10 >= 5 {
						clear(pcm) // silence: DTX frames
					} else {
						tone.Fill(pcm)
					}
					buf := make([]byte, codec.OpusMaxPacketBytes)
					n, err := enc.Encode(pcm, buf)
					if err != nil {
						t.Fatal(err)
					}
					frames[j] = buf[:n]
					long = long || n > opusShortLength
					empty = empty || n <= 2 // a TOC and no more, or DTX's two bytes
					vbr = vbr || n != len(frames[0])
				}
				n, err := packOpusFrames(out, frames)
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				total, err := packed.Decode(out[:n], got)
				if err != nil || total != len(frames)*960 {
					t.Fatalf("packet %d (% x…): %d samples, %v; want %d", i, out[:min(n, 4)], total, err, len(frames)*960)
				}
				at := 0
				for _, f := range frames {
					m, err := single.Decode(f, want[at:])
					if err != nil {
						t.Fatal(err)
					}
					at += m
				}
				if !slices.Equal(got[:total], want[:at]) {
					t.Fatalf("packet %d decodes to other audio than its %d frames", i, len(frames))
				}
			}
			if !vbr || (tc.opts.BitrateBPS > 100000 && !long) || (tc.opts.DTX && !empty) {
				t.Fatalf("the case did not come up: frames of different sizes %v, past 252 bytes %v, DTX frames %v", vbr, long, empty)
			}
		})
	}
}
