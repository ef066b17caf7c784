package engine

import (
	"context"
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// A re-INVITE that moves B off the codec the node transcoded into, made
// while a talkspurt's tail is held back, must not have that tail go out
// afterwards in the codec B no longer takes: the reader took up only the
// route it last saw a packet under, and the tail belongs to that one.
func TestTailIsNotSentInACodecAReInviteRemoved(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	e.talkspurtGrace = 300 * time.Millisecond // room for the re-INVITE before the tail is due
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, transcoding := bridge(t, e, "s1", a.sdp("0"), b.sdp("8", "a=ptime:40"))
	if !transcoding {
		t.Fatal("PCMU to PCMA does not transcode")
	}
	tone := encodeTone(t, codec.PCMU, 8000, 3)
	for i, payload := range tone {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 100 + uint16(i), Timestamp: 5000 + uint32(i*160), SSRC: 7, Marker: i == 0}, payload)
	}
	if p, ok := b.recv(2 * time.Second); !ok || p.PayloadType != 8 {
		t.Fatalf("first 40 ms packet: %v %+v", ok, p.Header)
	}
	// The third 20 ms is held back now. B re-INVITEs with PCMU alone.
	ctx := context.Background()
	if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("0", "a=ptime:40"), false); err != nil {
		t.Fatal(err)
	}
	_, transcoding, err := e.Update(ctx, "s1", LegA, a.sdp("0"), true)
	if err != nil {
		t.Fatal(err)
	}
	if transcoding {
		t.Fatal("still transcoding after B moved to PCMU")
	}
	if p, ok := b.recv(time.Second); ok && p.PayloadType == 8 {
		t.Fatalf("after B's re-INVITE to PCMU alone the node sent it PCMA (PT 8, seq %d, %d bytes)", p.SequenceNumber, len(p.Payload))
	}
}

// A re-INVITE that keeps the codec the node transcodes into, here under
// another payload type, keeps the tail held back across it: it goes out
// once due, as the new route says, following on from the talkspurt.
func TestTailAfterAReInviteKeepingTheCodecGoesOutAsItSays(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	e.talkspurtGrace = 300 * time.Millisecond // room for the re-INVITE before the tail is due
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, transcoding := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", "a=rtpmap:111 opus/48000/2", "a=ptime:60"))
	if !transcoding {
		t.Fatal("PCMU to Opus does not transcode")
	}
	tone := encodeTone(t, codec.PCMU, 8000, 4)
	for i, payload := range tone {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 100 + uint16(i), Timestamp: 5000 + uint32(i*160), SSRC: 7, Marker: i == 0}, payload)
	}
	first, ok := b.recv(2 * time.Second)
	if !ok || first.PayloadType != 111 {
		t.Fatalf("first 60 ms packet: %v %+v", ok, first.Header)
	}
	// The fourth 20 ms is held back now. B re-INVITEs with Opus as 112.
	ctx := context.Background()
	if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("112", "a=rtpmap:112 opus/48000/2", "a=ptime:60"), false); err != nil {
		t.Fatal(err)
	}
	if _, transcoding, err := e.Update(ctx, "s1", LegA, a.sdp("0"), true); err != nil || !transcoding {
		t.Fatalf("A's answer: transcoding %v, %v", transcoding, err)
	}
	tail, ok := b.recv(2 * time.Second)
	if !ok {
		t.Fatal("the tail held back across the re-INVITE never came")
	}
	if tail.PayloadType != 112 || tail.SequenceNumber != first.SequenceNumber+1 || tail.Timestamp != first.Timestamp+60*48 {
		t.Fatalf("tail: PT %d seq %d ts %d, want PT 112 after seq %d ts %d", tail.PayloadType, tail.SequenceNumber, tail.Timestamp, first.SequenceNumber, first.Timestamp)
	}
	n, err := newTestDecoder(t, codec.Opus, 48000).Decode(tail.Payload, make([]int16, 6000))
	if err != nil || n != 20*48 {
		t.Fatalf("tail: %d samples, %v; want 20 ms", n, err)
	}
}
