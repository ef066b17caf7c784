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
