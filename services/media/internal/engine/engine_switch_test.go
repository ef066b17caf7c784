package engine

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
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
// it returns to PCMA, and tells the node of each change in transcoding,
// the answer's included.
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
	expectChange(true) // the answer's
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

// drain receives until nothing more arrives, so that what was sent has been
// handled, and returns what came.
func (ep *endpoint) drain() []rtp.Packet {
	var got []rtp.Packet
	for {
		p, ok := ep.recv(300 * time.Millisecond)
		if !ok {
			return got
		}
		got = append(got, p)
	}
}

// A switch to a codec with another RTP clock (PCMU at 8 kHz to Opus at
// 48 kHz) starts a new jitter measurement, but the loss the callee's
// stream had before it is still the call's: it is reported at the end.
func TestCodecSwitchKeepsTheCallsLoss(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	_, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0 111", "a=rtpmap:111 opus/48000/2"))
	pcmu, opus := encodeTone(t, codec.PCMU, 8000, 20), encodeTone(t, codec.Opus, 48000, 20)
	for i := range 20 {
		if i == 10 {
			continue // lost in the network
		}
		b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: uint16(1 + i), Timestamp: uint32(i * 160), SSRC: 4}, pcmu[i])
	}
	for i := range 20 {
		b.send(nodeB, rtp.Header{PayloadType: 111, SequenceNumber: uint16(21 + i), Timestamp: uint32(20000 + i*960), SSRC: 4}, opus[i])
	}
	if got := len(a.drain()); got < 35 {
		t.Fatalf("A got %d packets of the 39 B sent", got)
	}
	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if lq := q.Legs[1]; lq.Codec != "opus" || lq.Lost != 1 || lq.MOS == 0 {
		t.Fatalf("leg B: codec %s, lost %d, MOS %.2f; want opus, the 1 PCMU packet lost, a MOS", lq.Codec, lq.Lost, lq.MOS)
	}
}

// Once the callee re-negotiates (a re-INVITE offering PCMA only), the
// other codecs of its first answer are no longer its to send: a PCMU
// packet it sends on is dropped, not decoded as the PCMA now in use, even
// when PCMU was the codec it had switched to. Rolled back, the first
// answer is in force again, and so are its codecs.
func TestReOfferRetiresTheAnswersOtherCodecs(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	_, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("8 0"))
	pcmu, pcma := encodeTone(t, codec.PCMU, 8000, 1)[0], encodeTone(t, codec.PCMA, 8000, 1)[0]
	b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: 1, Timestamp: 0, SSRC: 4}, pcmu)
	if p, ok := a.recv(2 * time.Second); !ok || p.PayloadType != 0 {
		t.Fatal("B's switch to PCMU not relayed")
	}
	if _, transcoding, err := e.Update(ctx, "s1", LegB, b.sdp("8"), false); err != nil || !transcoding {
		t.Fatalf("B's PCMA re-offer: transcoding %v, %v", transcoding, err)
	}
	b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: 2, Timestamp: 160, SSRC: 4}, pcmu)
	a.expectNothing(150 * time.Millisecond)

	if _, _, err := e.Rollback(ctx, "s1", LegB); err != nil {
		t.Fatal(err)
	}
	b.send(nodeB, rtp.Header{PayloadType: 8, SequenceNumber: 3, Timestamp: 320, SSRC: 4}, pcma)
	if _, ok := a.recv(2 * time.Second); !ok {
		t.Fatal("after the rollback, B's PCMA of its first answer not relayed")
	}
	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if q.Legs[1].Dropped.UnknownPayloadType != 1 {
		t.Fatalf("leg B drops = %+v, want the PCMU sent after the re-offer", q.Legs[1].Dropped)
	}
}

// The network may deliver the last packet of the codec a callee left
// after the first of its new one. That late packet is not a switch back:
// the call switches once, the node is told once (after the answer that
// started transcoding), and the caller's stream restarts (marker,
// re-based numbering) once.
func TestLatePacketOfTheCodecLeftIsNotASwitchBack(t *testing.T) {
	changes := make(chan bool, 8)
	e, _ := newTestEngine(t, nil, WithTranscodingHandler(func(_ string, transcoding bool) { changes <- transcoding }))
	a, b := newEndpoint(t), newEndpoint(t)
	_, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("8 0"))
	pcmu, pcma := encodeTone(t, codec.PCMU, 8000, 8), encodeTone(t, codec.PCMA, 8000, 8)
	for _, p := range []struct {
		pt  uint8
		seq int
	}{{8, 1}, {8, 2}, {8, 3}, {0, 5}, {8, 4}, {0, 6}, {0, 7}} {
		payload := pcma[p.seq]
		if p.pt == 0 {
			payload = pcmu[p.seq]
		}
		b.send(nodeB, rtp.Header{PayloadType: p.pt, SequenceNumber: uint16(p.seq), Timestamp: uint32(p.seq * 160), SSRC: 4}, payload)
	}
	got := a.drain()
	if len(got) != 6 {
		t.Fatalf("A got %d packets, want 3 transcoded and 3 relayed", len(got))
	}
	markers := 0
	for i, p := range got {
		if p.Marker {
			markers++
		}
		if i > 0 && (p.SequenceNumber != got[i-1].SequenceNumber+1 || p.SSRC != got[0].SSRC) {
			t.Fatalf("packet %d: seq %d after %d, SSRC %#x", i, p.SequenceNumber, got[i-1].SequenceNumber, p.SSRC)
		}
	}
	if markers != 2 || !got[3].Marker {
		t.Fatalf("%d markers, want the stream's start and the one switch", markers)
	}
	if n := len(changes); n != 2 || !<-changes || <-changes {
		t.Fatalf("%d transcoding changes reported, want the answer's and one to passthrough", n)
	}
	if n := testutil.ToFloat64(e.metrics.codecSwitches); n != 1 {
		t.Fatalf("%v codec switches counted, want 1", n)
	}
	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if q.Legs[1].Lost != 0 {
		t.Fatalf("leg B lost %d: the late packet arrived", q.Legs[1].Lost)
	}
}

// A codec of the answer the node cannot set up (here an Opus encoder
// refusing its options) is refused once and then dropped as a payload type
// not in use: an endpoint sending it on gets neither a failed set-up nor a
// warning per packet, and the leg keeps its codec and its statistics, in
// which the packets refused arrived and are no loss.
func TestRefusedCodecSwitchIsRefusedOnce(t *testing.T) {
	var logs lockedBuffer
	e, _ := newTestEngineLogging(t, func(c *Config) {
		c.Opus = codec.DefaultOpusOptions()
		c.Opus.Complexity = 11
	}, &logs)
	a, b := newEndpoint(t), newEndpoint(t)
	_, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0 111", "a=rtpmap:111 opus/48000/2"))
	pcmu, opus := encodeTone(t, codec.PCMU, 8000, 1)[0], encodeTone(t, codec.Opus, 48000, 1)[0]
	seq := uint16(1)
	send := func(pt uint8, payload []byte, n int) {
		for range n {
			b.send(nodeB, rtp.Header{PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 4}, payload)
			seq++
		}
	}
	send(0, pcmu, 5)
	send(111, opus, 10)
	send(0, pcmu, 5)
	if got := len(a.drain()); got != 10 {
		t.Fatalf("A got %d packets, want the 10 PCMU relayed", got)
	}
	if n := strings.Count(logs.String(), "codec switch refused"); n != 1 {
		t.Fatalf("refusal logged %d times, want once:\n%s", n, logs.String())
	}
	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if lq := q.Legs[1]; lq.Codec != "PCMU" || lq.Dropped.UnknownPayloadType != 10 || lq.Lost != 0 || lq.MOS == 0 {
		t.Fatalf("leg B = %+v", lq)
	}
}

// lockedBuffer is a log sink written by the engine's goroutines and read by
// the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Every change in a session's transcoding is told to the transcoding
// handler, the negotiations' own as well as the codec switches, one at a
// time, in order and with the session held: the last it was told is what
// the session does, so a ledger kept by it cannot end on a stale flag
// however a negotiation and a switch interleave.
func TestEveryTranscodingChangeIsReported(t *testing.T) {
	var (
		e       *Engine
		mu      sync.Mutex
		changes []bool
	)
	e, _ = newTestEngine(t, nil, WithTranscodingHandler(func(id string, on bool) {
		e.mu.Lock()
		s := e.sessions[id]
		e.mu.Unlock()
		if s != nil && s.mu.TryLock() {
			s.mu.Unlock()
			t.Errorf("told of a change to %v without the session held", on)
		}
		mu.Lock()
		changes = append(changes, on)
		mu.Unlock()
	}))
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := context.Background()
	told := func() []bool {
		mu.Lock()
		defer mu.Unlock()
		return append([]bool(nil), changes...)
	}
	check := func(what string, got bool, want ...bool) {
		t.Helper()
		if len(want) > 0 && got != want[len(want)-1] {
			t.Fatalf("%s: the engine says transcoding %v, want %v", what, got, want[len(want)-1])
		}
		if all := told(); !slices.Equal(all, want) {
			t.Fatalf("%s: the handler was told %v, want %v", what, all, want)
		}
	}
	_, _, transcoding := bridge(t, e, "s1", a.sdp("0"), b.sdp("8"))
	check("an answer in another codec", transcoding, true)
	_, transcoding, err := e.Update(ctx, "s1", LegB, b.sdp("0"), false)
	if err != nil {
		t.Fatal(err)
	}
	check("a re-offer in the caller's codec", transcoding, true, false)
	if _, transcoding, err = e.Update(ctx, "s1", LegB, b.sdp("8"), false); err != nil {
		t.Fatal(err)
	}
	check("a re-offer in another codec", transcoding, true, false, true)
	if _, transcoding, err = e.Update(ctx, "s1", LegB, b.sdp("8", "a=sendonly"), false); err != nil {
		t.Fatal(err)
	}
	check("a hold that keeps the codecs", transcoding, true, false, true)
	if _, transcoding, err = e.Rollback(ctx, "s1", LegB); err != nil {
		t.Fatal(err)
	}
	check("the hold rolled back", transcoding, true, false, true)
	if _, transcoding, err = e.Update(ctx, "s1", LegA, a.sdp("8"), false); err != nil {
		t.Fatal(err)
	}
	check("the caller moving to the callee's codec", transcoding, true, false, true, false)
	if _, transcoding, err = e.Rollback(ctx, "s1", LegA); err != nil {
		t.Fatal(err)
	}
	check("that offer rolled back", transcoding, true, false, true, false, true)
}
