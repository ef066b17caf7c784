package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"callgrid.dev/services/media/internal/codec"
)

// RFC 3264 §6.1: an answerer may send with any codec its answer lists, and
// the offerer must be ready for each. A callee answering "PCMA PCMU" and
// sending PCMU is followed: the node switches the leg to PCMU both ways
// (passthrough, since the caller has PCMU), then back to transcoding when
// it returns to PCMA, and tells the node of each change in transcoding.
func TestAnswererMaySendAnyCodecItListed(t *testing.T) {
	changes := make(chan bool, 4)
	e, reg := newTestEngine(t, nil, WithTranscodingHandler(func(id string, transcoding bool) {
		if id == "s1" {
			changes <- transcoding
		}
	}))
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, nodeB, transcoding := bridge(t, e, "s1",
		a.sdp("0 101", "a=rtpmap:101 telephone-event/8000"),
		b.sdp("8 0 101", "a=rtpmap:101 telephone-event/8000"))
	if !transcoding {
		t.Fatal("PCMA answer to a PCMU caller not reported as transcoding")
	}
	expectChange := func(want bool) {
		t.Helper()
		select {
		case got := <-changes:
			if got != want {
				t.Fatalf("transcoding change %v, want %v", got, want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("no transcoding change to %v reported", want)
		}
	}
	const frames = 30
	seq, ts := uint16(10), uint32(1000)
	sendFromB := func(name codec.Name, pt uint8) {
		t.Helper()
		for i, payload := range encodeTone(t, name, 8000, frames) {
			b.send(nodeB, rtp.Header{PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: 21, Marker: i == 0}, payload)
			seq++
			ts += 160
		}
	}

	t.Run("B sends PCMU: relayed to A as it is", func(t *testing.T) {
		sendFromB(codec.PCMU, 0)
		checkTone(t, receiveTone(t, a, codec.PCMU, 8000, 0, 160, frames), 8000)
		expectChange(false)
	})
	t.Run("and A's PCMU now goes to B as PCMU", func(t *testing.T) {
		for i, payload := range encodeTone(t, codec.PCMU, 8000, frames) {
			a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(500 + i), Timestamp: uint32(i * 160), SSRC: 5, Marker: i == 0}, payload)
		}
		checkTone(t, receiveTone(t, b, codec.PCMU, 8000, 0, 160, frames), 8000)
	})
	t.Run("B returns to PCMA: transcoded to A's PCMU", func(t *testing.T) {
		sendFromB(codec.PCMA, 8)
		checkTone(t, receiveTone(t, a, codec.PCMU, 8000, 0, 160, frames), 8000)
		expectChange(true)
	})
	t.Run("a codec B did not list is still dropped", func(t *testing.T) {
		b.send(nodeB, rtp.Header{PayloadType: 9, SequenceNumber: seq, Timestamp: ts, SSRC: 21}, make([]byte, 160))
		a.expectNothing(150 * time.Millisecond)
	})

	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if q.Legs[1].Codec != "PCMA" || q.Legs[1].Dropped.UnknownPayloadType != 1 {
		t.Fatalf("leg B quality = %+v", q.Legs[1])
	}
	const want = `
# HELP media_codec_switches_total Endpoints that started sending another codec of their answer.
# TYPE media_codec_switches_total counter
media_codec_switches_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "media_codec_switches_total"); err != nil {
		t.Fatal(err)
	}
}

// An endpoint alternating between its answer's codecs on every packet
// costs the session one transcoder per pair of codecs, not one per switch.
func TestAlternatingCodecsReuseTheirTranscoders(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	_, nodeB, _ := bridge(t, e, "s1",
		a.sdp("0"),
		b.sdp("8 0 9"))
	pcma, pcmu, g722 := encodeTone(t, codec.PCMA, 8000, 1)[0], encodeTone(t, codec.PCMU, 8000, 1)[0], encodeTone(t, codec.G722, 16000, 1)[0]
	for i := range 60 {
		pt, payload := uint8(8), pcma
		switch i % 3 {
		case 1:
			pt, payload = 0, pcmu
		case 2:
			pt, payload = 9, g722
		}
		b.send(nodeB, rtp.Header{PayloadType: pt, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 3}, payload)
		if _, ok := a.recv(2 * time.Second); !ok {
			t.Fatalf("packet %d (pt %d) not delivered", i, pt)
		}
	}
	s, err := e.lookup("s1")
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	n := len(s.closers)
	s.mu.Unlock()
	// PCMA→PCMU, G.722→PCMU and PCMU→PCMA, PCMU→G.722 the other way.
	if n > 4 {
		t.Fatalf("%d codec pipelines after 60 alternating packets, want at most 4", n)
	}
}
