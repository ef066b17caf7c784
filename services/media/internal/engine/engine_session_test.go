package engine

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/sdpneg"
)

func TestHoldAndResume(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := context.Background()
	nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	flows := func(from, to *endpoint, node netip.AddrPort, seq uint16) bool {
		t.Helper()
		from.send(node, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 1}, pcmuPayload(1))
		_, ok := to.recv(200 * time.Millisecond)
		return ok
	}

	steps := []struct {
		name          string
		leg           Leg
		sdp           []byte
		answer        bool
		wantDirection sdpneg.Direction // in the SDP for the other leg
		aToB, bToA    bool
	}{
		{name: "A holds", leg: LegA, sdp: a.sdp("0", "a=sendonly"), wantDirection: sdpneg.SendOnly, aToB: true, bToA: false},
		{name: "B accepts hold", leg: LegB, sdp: b.sdp("0", "a=recvonly"), answer: true, wantDirection: sdpneg.RecvOnly, aToB: true, bToA: false},
		{name: "A goes inactive", leg: LegA, sdp: a.sdp("0", "a=inactive"), wantDirection: sdpneg.Inactive, aToB: true, bToA: false},
		{name: "A resumes", leg: LegA, sdp: a.sdp("0", "a=sendrecv"), wantDirection: sdpneg.SendRecv, aToB: true, bToA: true},
		{name: "B answers resume", leg: LegB, sdp: b.sdp("0"), answer: true, wantDirection: sdpneg.SendRecv, aToB: true, bToA: true},
	}
	seq := uint16(1)
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			out, _, err := e.Update(ctx, "s1", st.leg, st.sdp, st.answer)
			if err != nil {
				t.Fatal(err)
			}
			d, err := sdpneg.Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			if d.Audio().Direction != st.wantDirection {
				t.Fatalf("direction for the other leg = %v, want %v", d.Audio().Direction, st.wantDirection)
			}
			seq++
			// B said recvonly: it still may not send, but A's media to B
			// only needs B to receive.
			if got := flows(a, b, nodeA, seq); got != st.aToB {
				t.Fatalf("A→B flows = %v, want %v", got, st.aToB)
			}
			if got := flows(b, a, nodeB, seq); got != st.bToA {
				t.Fatalf("B→A flows = %v, want %v", got, st.bToA)
			}
		})
	}
	if e.Active() != 1 {
		t.Fatal("session lost during re-INVITEs")
	}
}

// A phone that holds the RFC 2543 way (c=0.0.0.0) and says a=sendonly, as
// phones that play their own music on hold do, still sends: 0.0.0.0 only
// says nothing is to be sent to it (RFC 3264 §8.4). Its RTP and RTCP come
// from where they came before the hold, and reach B, through a hold re-sent
// too; a stranger is still refused.
func TestLegacyHoldSenderIsStillRelayed(t *testing.T) {
	e, _ := newTestEngine(t, nil) // AllowLatching off, the default
	a, b, stranger := newEndpoint(t), newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	relays(t, "A to B before the hold", a, nodeA, 1, b)

	legacyHold := func(version string) []byte {
		raw := bytes.ReplaceAll(a.sdp("0", "a=sendonly"), []byte("c=IN IP4 127.0.0.1"), []byte("c=IN IP4 0.0.0.0"))
		return bytes.Replace(raw, []byte("o=- 1 1"), []byte("o=- 1 "+version), 1)
	}
	seq := uint16(1)
	for _, version := range []string{"2", "3"} {
		toB, _, err := e.Update(ctx, "s1", LegA, legacyHold(version), false)
		if err != nil {
			t.Fatal(err)
		}
		if d, err := sdpneg.Parse(toB); err != nil || d.Audio().Direction != sdpneg.SendOnly {
			t.Fatalf("hold offer to B: %v\n%s", err, toB)
		}
		if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("0", "a=recvonly"), true); err != nil {
			t.Fatal(err)
		}
		seq++
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 1}, pcmuPayload(2))
		if _, ok := b.recv(time.Second); !ok {
			q, _ := e.Delete("s1")
			t.Fatalf("hold version %s: A's music on hold never reached B; A's drops %+v", version, q.Legs[0].Dropped)
		}
	}

	sr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.SenderReport{SSRC: 1, NTPTime: 1 << 40, PacketCount: 3, OctetCount: 480}})
	if _, err := a.rtcp.WriteToUDPAddrPort(sr, netip.AddrPortFrom(nodeA.Addr(), nodeA.Port()+1)); err != nil {
		t.Fatal(err)
	}
	_ = b.rtcp.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := b.rtcp.Read(make([]byte, 1500)); err != nil {
		t.Fatalf("A's sender report on hold not relayed to B: %v", err)
	}

	stranger.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 9, SSRC: 66}, pcmuPayload(9))
	b.expectNothing(100 * time.Millisecond)
	q, _ := e.Delete("s1")
	if q.Legs[0].Dropped.WrongSource != 1 {
		t.Fatalf("A's drops %+v, want only the stranger's packet", q.Legs[0].Dropped)
	}
}

func TestUpdateChangesCodecAndAddress(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b, a2 := newEndpoint(t), newEndpoint(t), newEndpoint(t)
	ctx := context.Background()
	_, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	// A moves to another device that only speaks PCMA: B stays on PCMU,
	// so the node starts transcoding.
	if _, transcoding, err := e.Update(ctx, "s1", LegA, a2.sdp("8"), false); err != nil || !transcoding {
		t.Fatalf("update: transcoding %v, err %v; want transcoding", transcoding, err)
	}
	b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: 1, SSRC: 1}, pcmuPayload(0xff))
	p, ok := a2.recv(2 * time.Second)
	if !ok || p.PayloadType != 8 {
		t.Fatalf("after move: ok %v pt %d", ok, p.PayloadType)
	}
	a.expectNothing(50 * time.Millisecond)
	if _, _, err := e.Update(ctx, "nope", LegA, a2.sdp("8"), false); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("unknown session: %v", err)
	}
	if _, _, err := e.Update(ctx, "s1", LegA, []byte("junk"), false); !errors.Is(err, ErrBadSDP) {
		t.Fatalf("bad sdp: %v", err)
	}
}

func TestMediaTimeout(t *testing.T) {
	type ended struct {
		id string
		q  Quality
	}
	timedOut := make(chan ended, 1)
	e, reg := newTestEngine(t, func(c *Config) { c.MediaTimeout = 150 * time.Millisecond },
		WithTimeoutHandler(func(id string, q Quality) { timedOut <- ended{id, q} }))
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	// A talks, B never does: B's silence ends the call.
	stop := time.Now().Add(5 * time.Second)
	var got ended
	for seq := uint16(0); ; seq++ {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 1}, pcmuPayload(1))
		select {
		case got = <-timedOut:
		case <-time.After(20 * time.Millisecond):
			if time.Now().After(stop) {
				t.Fatal("no media timeout")
			}
			continue
		}
		break
	}
	if got.id != "s1" || got.q.Legs[0].PacketsIn == 0 || got.q.Legs[1].PacketsIn != 0 {
		t.Fatalf("timeout report = %+v", got)
	}
	if e.Active() != 0 || e.pool.InUse() != 0 {
		t.Fatalf("after timeout: %d sessions, %d port pairs", e.Active(), e.pool.InUse())
	}
	want := "\n# HELP media_port_pairs_in_use RTP/RTCP port pairs allocated.\n# TYPE media_port_pairs_in_use gauge\nmedia_port_pairs_in_use 0\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "media_port_pairs_in_use"); err != nil {
		t.Fatal(err)
	}
}

// A provisional answer (a 183 with SDP) sets up early media but does not
// start the media timeout: a callee may ring without a sound. The final
// answer starts it, also when it repeats the provisional one's SDP.
func TestProvisionalAnswerStartsNoTimeout(t *testing.T) {
	timedOut := make(chan string, 1)
	e, _ := newTestEngine(t, func(c *Config) { c.MediaTimeout = 100 * time.Millisecond },
		WithTimeoutHandler(func(id string, _ Quality) { timedOut <- id }))
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", CallID: "call-s1", SDP: a.sdp("0")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Answer(ctx, "s1", b.sdp("0"), true); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-timedOut:
		t.Fatalf("session %s timed out while the callee rang after a 183", id)
	case <-time.After(600 * time.Millisecond):
	}
	if _, _, err := e.Answer(ctx, "s1", b.sdp("0"), false); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-timedOut:
		if id != "s1" {
			t.Fatalf("timed out %q", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no media timeout after the final answer")
	}
	if e.Active() != 0 || e.pool.InUse() != 0 {
		t.Fatalf("after timeout: %d sessions, %d port pairs", e.Active(), e.pool.InUse())
	}
}

func TestHoldTimeout(t *testing.T) {
	tests := []struct {
		name        string
		holdTimeout time.Duration
		wantEnd     bool
	}{
		{name: "held call never times out by default", holdTimeout: 0, wantEnd: false},
		{name: "hold timeout applies", holdTimeout: 100 * time.Millisecond, wantEnd: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			timedOut := make(chan string, 1)
			e, _ := newTestEngine(t, func(c *Config) {
				c.MediaTimeout = 100 * time.Millisecond
				c.HoldTimeout = tc.holdTimeout
			}, WithTimeoutHandler(func(id string, _ Quality) { timedOut <- id }))
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := context.Background()
			if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0", "a=inactive")}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := e.Answer(ctx, "s1", b.sdp("0", "a=inactive"), false); err != nil {
				t.Fatal(err)
			}
			select {
			case <-timedOut:
				if !tc.wantEnd {
					t.Fatal("held call timed out")
				}
			case <-time.After(500 * time.Millisecond):
				if tc.wantEnd {
					t.Fatal("no hold timeout")
				}
			}
		})
	}
}

// A one-way call is judged by the negotiated directions, not the ones the
// endpoints declared: a caller that offered sendrecv and was answered
// sendonly or inactive was told not to send, and a listen-only leg is not
// timed out for its silence while the other side's media flows. Once no
// leg sends at all, the hold timeout ends the call.
func TestOneWayCallTimesOutOnlyWhenAllIsSilent(t *testing.T) {
	tests := []struct {
		name          string
		offer, answer string
	}{
		{name: "callee answered sendonly", offer: "a=sendrecv", answer: "a=sendonly"},
		{name: "callee answered inactive", offer: "a=sendrecv", answer: "a=inactive"},
		{name: "caller listens only", offer: "a=recvonly", answer: "a=sendonly"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			timedOut := make(chan string, 1)
			e, _ := newTestEngine(t, func(c *Config) {
				c.MediaTimeout = 100 * time.Millisecond
				c.HoldTimeout = 250 * time.Millisecond
			}, WithTimeoutHandler(func(id string, _ Quality) { timedOut <- id }))
			a, b := newEndpoint(t), newEndpoint(t)
			_, nodeB, _ := bridge(t, e, "s1", a.sdp("0", tc.offer), b.sdp("0", tc.answer))
			// B talks for nearly three hold timeouts; A never does.
			stop := time.Now().Add(700 * time.Millisecond)
			for seq := uint16(0); time.Now().Before(stop); seq++ {
				b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 7}, pcmuPayload(1))
				select {
				case <-timedOut:
					t.Fatalf("timed out after %d packets from B", seq)
				case <-time.After(20 * time.Millisecond):
				}
			}
			// Then nobody sends: the hold timeout ends it.
			select {
			case <-timedOut:
			case <-time.After(5 * time.Second):
				t.Fatal("a silent one-way call never timed out")
			}
		})
	}
}

func TestNoTimeoutBeforeAnswer(t *testing.T) {
	timedOut := make(chan string, 1)
	e, _ := newTestEngine(t, func(c *Config) { c.MediaTimeout = 50 * time.Millisecond },
		WithTimeoutHandler(func(id string, _ Quality) { timedOut <- id }))
	a := newEndpoint(t)
	if _, err := e.Offer(context.Background(), OfferParams{SessionID: "ringing", SDP: a.sdp("0")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-timedOut:
		t.Fatal("a ringing call timed out")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestDeleteReleasesEverything(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", "a=rtpmap:111 opus/48000/2"))
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 1, SSRC: 1}, pcmuPayload(1))
	if _, ok := b.recv(2 * time.Second); !ok {
		t.Fatal("no media before delete")
	}
	if _, err := e.Delete("s1"); err != nil {
		t.Fatal(err)
	}
	// The node's sockets are gone: their ports can be bound by anyone.
	for _, node := range []netip.AddrPort{nodeA, nodeB} {
		for _, port := range []uint16{node.Port(), node.Port() + 1} {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
			if err != nil {
				t.Fatalf("port %d still bound after delete: %v", port, err)
			}
			c.Close()
		}
	}
	if e.pool.InUse() != 0 || e.Active() != 0 {
		t.Fatalf("%d pairs, %d sessions after delete", e.pool.InUse(), e.Active())
	}
	// goleak runs in the engine's cleanup.
}

func TestCloseEndsAllSessions(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	ctx := context.Background()
	for _, id := range []string{"s1", "s2", "s3"} {
		a := newEndpoint(t)
		if _, err := e.Offer(ctx, OfferParams{SessionID: id, SDP: a.sdp("0"), Service: Service(len(id) % 3)}); err != nil {
			t.Fatal(err)
		}
	}
	e.Close()
	if e.Active() != 0 || e.pool.InUse() != 0 {
		t.Fatalf("after Close: %d sessions, %d pairs", e.Active(), e.pool.InUse())
	}
	if _, err := e.Offer(ctx, OfferParams{SessionID: "late", SDP: newEndpoint(t).sdp("0")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("offer after close: %v", err)
	}
}

func TestEchoService(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a := newEndpoint(t)
	answer, err := e.Offer(context.Background(), OfferParams{SessionID: "echo", SDP: a.sdp("8 0 101", "a=rtpmap:101 telephone-event/8000"), Service: ServiceEcho})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := sdpneg.Parse(answer)
	if c := d.Audio().Codecs; len(c) != 1 || c[0].Name != "PCMA" {
		t.Fatalf("echo answered %+v", c)
	}
	node := d.Audio().RTP()
	for i := range 10 {
		a.send(node, rtp.Header{PayloadType: 8, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 42}, pcmuPayload(byte(i)))
		p, ok := a.recv(2 * time.Second)
		if !ok {
			t.Fatalf("packet %d not echoed", i)
		}
		if p.SSRC == 42 || p.PayloadType != 8 || p.Payload[0] != byte(i) {
			t.Fatalf("echo %d: ssrc %d pt %d", i, p.SSRC, p.PayloadType)
		}
	}
	if _, _, err := e.Update(context.Background(), "echo", LegB, a.sdp("8"), false); !errors.Is(err, ErrBadLeg) {
		t.Fatalf("update leg B of echo: %v", err)
	}
}

func TestToneService(t *testing.T) {
	tests := []struct {
		name   string
		sdp    string
		attrs  []string
		codec  codec.Name
		rate   int
		pt     uint8
		tsStep uint32
	}{
		{name: "PCMU", sdp: "0", codec: codec.PCMU, rate: 8000, pt: 0, tsStep: 160},
		{name: "Opus", sdp: "111", attrs: []string{"a=rtpmap:111 opus/48000/2"}, codec: codec.Opus, rate: 48000, pt: 111, tsStep: 960},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a := newEndpoint(t)
			if _, err := e.Offer(context.Background(), OfferParams{SessionID: "tone", SDP: a.sdp(tc.sdp, tc.attrs...), Service: ServiceTone}); err != nil {
				t.Fatal(err)
			}
			// 15 frames (300 ms) paced by the node's clock.
			checkTone(t, receiveTone(t, a, tc.codec, tc.rate, tc.pt, tc.tsStep, 15), tc.rate)
		})
	}
}

// A delete that races the media timeout of the same session (the phone's
// BYE as the node gives up on the call) gets the session's quality, not
// "unknown session".
func TestDeleteRacingATimeoutGetsTheQuality(t *testing.T) {
	inHandler, release := make(chan struct{}), make(chan struct{})
	e, _ := newTestEngine(t, func(c *Config) { c.MediaTimeout = 100 * time.Millisecond },
		WithTimeoutHandler(func(string, Quality) { close(inHandler); <-release }))
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 1, SSRC: 1}, pcmuPayload(1))
	select {
	case <-inHandler:
	case <-time.After(5 * time.Second):
		t.Fatal("no media timeout")
	}
	q, err := e.Delete("s1")
	close(release)
	if err != nil || q.Legs[0].PacketsIn != 1 {
		t.Fatalf("delete during the timeout: %+v, %v; want leg A's one packet", q, err)
	}
}
