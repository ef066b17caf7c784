package engine

import (
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// An answerer that switches codec (RFC 3264 §6.1) while a paced packet of
// its old codec's last frame waits has that packet sent, once and in its
// place, ahead of the new codec's first audio: here B's PCMU, then its
// PCMA, both transcoded into the 10 ms G.722 packets A asked for. The new
// codec's audio begins a talkspurt after it.
func TestCodecSwitchSendsThePacedPacket(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	_, nodeB, transcoding := bridge(t, e, "s1", a.sdp("9", "a=ptime:10"), b.sdp("0 8"))
	if !transcoding {
		t.Fatal("PCMU to G.722 does not transcode")
	}
	pcmu, pcma := encodeTone(t, codec.PCMU, 8000, 1)[0], encodeTone(t, codec.PCMA, 8000, 1)[0]
	// Back to back: the PCMA packet comes before the PCMU one's second
	// 10 ms packet is due.
	b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: 100, Timestamp: 5000, SSRC: 21, Marker: true}, pcmu)
	b.send(nodeB, rtp.Header{PayloadType: 8, SequenceNumber: 101, Timestamp: 5160, SSRC: 21}, pcma)
	got := receivePackets(t, a, 4)
	a.expectNothing(100 * time.Millisecond)
	first, paced, switched, after := got[0], got[1], got[2], got[3]
	if !first.Marker || paced.Marker || paced.SequenceNumber != first.SequenceNumber+1 || paced.Timestamp != first.Timestamp+80 {
		t.Fatalf("PCMU's packets: %+v then %+v, want the paced one 80 ticks after the first", first.Header, paced.Header)
	}
	if !switched.Marker || switched.SequenceNumber != paced.SequenceNumber+1 || int32(switched.Timestamp-paced.Timestamp) < 80 {
		t.Fatalf("PCMA's first packet %+v after the paced PCMU one %+v, want a talkspurt after it", switched.Header, paced.Header)
	}
	if after.Marker || after.SequenceNumber != switched.SequenceNumber+1 || after.Timestamp != switched.Timestamp+80 {
		t.Fatalf("PCMA's second packet %+v after %+v", after.Header, switched.Header)
	}
	for i, p := range got {
		if p.PayloadType != 9 || len(p.Payload) != 80 {
			t.Fatalf("packet %d: payload type %d, %d octets, want 10 ms of G.722", i, p.PayloadType, len(p.Payload))
		}
	}
}

// An answerer that switches codec while its old codec's transcoder holds
// encoded audio toward a packet not yet whole (the frame held for a 40 ms
// packet) has that audio sent, as a shorter packet like a talkspurt's
// tail, ahead of the new codec's first audio, numbered and timestamped on
// from the packets before it: dropped, it was up to 40 ms of speech. The
// 10 ms short of a frame left in the fifo goes with the old stream, as at
// a talkspurt's end: the new codec's audio starts a talkspurt after the
// last frame sent.
func TestCodecSwitchSendsTheAudioHeldBack(t *testing.T) {
	type source struct {
		pt      uint8
		ts      uint32
		payload []byte
	}
	type sent struct {
		octets int  // of 16 kHz G.722: 160 for 20 ms
		marker bool // starts a talkspurt
	}
	pcmu, pcma := encodeTone(t, codec.PCMU, 8000, 2), encodeTone(t, codec.PCMA, 8000, 2)
	tests := []struct {
		name string
		aSDP []string
		srcs []source
		want []sent
		// want[short] is the audio held back, sent short: it and the
		// packets before it follow on exactly, those after it no sooner.
		short int
	}{
		{
			name: "frame held for a 40 ms packet",
			aSDP: []string{"9", "a=ptime:40"},
			srcs: []source{{0, 5000, pcmu[0]}, {8, 5160, pcma[0]}, {8, 5320, pcma[1]}},
			want: []sent{{160, true}, {320, true}},
		},
		{
			name: "half a frame in the fifo",
			aSDP: []string{"9"},
			srcs: []source{{0, 5000, pcmu[0][:80]}, {0, 5080, pcmu[0][80:]}, {0, 5160, pcmu[1][:80]}, {8, 5240, pcma[0]}},
			want: []sent{{160, true}, {160, true}},
		},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			_, nodeB, transcoding := bridge(t, e, "s1", a.sdp(c.aSDP[0], c.aSDP[1:]...), b.sdp("0 8"))
			if !transcoding {
				t.Fatal("PCMU to G.722 does not transcode")
			}
			for i, s := range c.srcs {
				b.send(nodeB, rtp.Header{PayloadType: s.pt, SequenceNumber: uint16(100 + i), Timestamp: s.ts, SSRC: 21, Marker: i == 0}, s.payload)
			}
			got := receivePackets(t, a, len(c.want))
			a.expectNothing(100 * time.Millisecond)
			for i, p := range got {
				w := c.want[i]
				if p.PayloadType != 9 || len(p.Payload) != w.octets || p.Marker != w.marker {
					t.Fatalf("packet %d: payload type %d, %d octets, marker %v; want 9, %d, %v", i, p.PayloadType, len(p.Payload), p.Marker, w.octets, w.marker)
				}
				if i == 0 {
					continue
				}
				prev := got[i-1]
				if p.SequenceNumber != prev.SequenceNumber+1 {
					t.Fatalf("packet %d: seq %d after %d", i, p.SequenceNumber, prev.SequenceNumber)
				}
				// G.722's RTP clock is 8 kHz: an octet a tick.
				if end := prev.Timestamp + uint32(len(prev.Payload)); i <= c.short && p.Timestamp != end || int32(p.Timestamp-end) < 0 {
					t.Fatalf("packet %d: ts %d after ts %d of %d octets", i, p.Timestamp, prev.Timestamp, len(prev.Payload))
				}
			}
		})
	}
}
