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

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPassthroughRemapsPayloadTypes(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	// B numbers PCMU 100 and DTMF 96 where A uses 0 and 101.
	nodeA, nodeB, transcoding := bridge(t, e, "s1",
		a.sdp("0 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"),
		b.sdp("100 96", "a=rtpmap:100 PCMU/8000", "a=rtpmap:96 telephone-event/8000"))
	if transcoding {
		t.Fatal("same codec on both legs reported as transcoding")
	}

	tests := []struct {
		name             string
		from, to         *endpoint
		node             netip.AddrPort
		sendPT, wantPT   uint8
		eventPT, wantEPT uint8
	}{
		{name: "A to B", from: a, to: b, node: nodeA, sendPT: 0, wantPT: 100, eventPT: 101, wantEPT: 96},
		{name: "B to A", from: b, to: a, node: nodeB, sendPT: 100, wantPT: 0, eventPT: 96, wantEPT: 101},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const packets = 50
			firstSeq := 65500 // the sequence wraps mid-test
			const ssrc = 0x1234
			for i := range packets {
				tc.from.send(tc.node, rtp.Header{PayloadType: tc.sendPT, SequenceNumber: uint16(firstSeq + i), Timestamp: uint32(i * 160), SSRC: ssrc, Marker: i == 0}, pcmuPayload(byte(i)))
			}
			for i := range packets {
				p, ok := tc.to.recv(2 * time.Second)
				if !ok {
					t.Fatalf("packet %d not delivered", i)
				}
				if p.PayloadType != tc.wantPT || p.SequenceNumber != uint16(firstSeq+i) || p.Timestamp != uint32(i*160) || p.SSRC != ssrc {
					t.Fatalf("packet %d: pt %d seq %d ts %d ssrc %x", i, p.PayloadType, p.SequenceNumber, p.Timestamp, p.SSRC)
				}
				if p.Marker != (i == 0) || !bytes.Equal(p.Payload, pcmuPayload(byte(i))) {
					t.Fatalf("packet %d: marker %v or payload changed", i, p.Marker)
				}
			}
			// A DTMF digit in the same stream keeps its numbering.
			event := []byte{5, 0x8a, 0x03, 0x20} // digit 5, end, volume 10, 800 ticks
			tc.from.send(tc.node, rtp.Header{PayloadType: tc.eventPT, SequenceNumber: uint16(firstSeq + packets), Timestamp: 9000, SSRC: ssrc}, event)
			p, ok := tc.to.recv(2 * time.Second)
			if !ok {
				t.Fatal("event not delivered")
			}
			if p.PayloadType != tc.wantEPT || p.SequenceNumber != uint16(firstSeq+packets) || !bytes.Equal(p.Payload, event) {
				t.Fatalf("event: pt %d seq %d payload %x", p.PayloadType, p.SequenceNumber, p.Payload)
			}
		})
	}

	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if q.Legs[0].PacketsIn != 51 || q.Legs[1].PacketsIn != 51 || q.Legs[0].PacketsOut != 51 || q.Legs[0].Codec != "PCMU" {
		t.Fatalf("quality = %+v", q)
	}
	if q.Legs[0].Lost != 0 || q.Legs[0].MOS < 4 {
		t.Fatalf("clean stream rated lost %d MOS %.2f", q.Legs[0].Lost, q.Legs[0].MOS)
	}
	if _, err := e.Delete("s1"); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("second delete: %v", err)
	}
	if e.Active() != 0 || e.pool.InUse() != 0 {
		t.Fatalf("after delete: %d sessions, %d port pairs", e.Active(), e.pool.InUse())
	}
}

func TestSourceChangeKeepsOutgoingStreamContinuous(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 10, Timestamp: 1000, SSRC: 1}, pcmuPayload(1))
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 11, Timestamp: 1160, SSRC: 1}, pcmuPayload(1))
	// The phone restarts its stream (new SSRC, new numbering).
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 5000, Timestamp: 777777, SSRC: 2}, pcmuPayload(2))
	var got []rtp.Packet
	for range 3 {
		p, ok := b.recv(2 * time.Second)
		if !ok {
			t.Fatal("packet lost")
		}
		got = append(got, p)
	}
	if got[2].SSRC != 1 || got[2].SequenceNumber != 12 || !got[2].Marker {
		t.Fatalf("after source change: ssrc %d seq %d marker %v", got[2].SSRC, got[2].SequenceNumber, got[2].Marker)
	}
	if d := got[2].Timestamp - got[1].Timestamp; d < 160 || d > 160*50 {
		t.Fatalf("timestamp advanced %d across the change", d)
	}
}

// pcmuWithEvents describes the endpoint with PCMU and telephone-event.
func (ep *endpoint) pcmuWithEvents() []byte {
	return ep.sdp("0 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16")
}

// A digit does not show as network jitter: every packet of an RFC 4733
// event repeats its start timestamp, which the jitter estimate must not
// take for late audio.
func TestDigitIsNotJitter(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.pcmuWithEvents(), b.pcmuWithEvents())
	seq, ts := uint16(1), uint32(0)
	next := time.Now()
	pace := func() {
		next = next.Add(20 * time.Millisecond)
		time.Sleep(time.Until(next))
		seq++
	}
	for range 15 {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: ts, SSRC: 7}, pcmuPayload(1))
		ts += 160
		pace()
	}
	start := ts
	for i := range 28 { // a 500 ms digit, then its three end packets
		duration := min(i+1, 25) * 160
		end := byte(0)
		if i >= 25 {
			end = 0x80
		}
		a.send(nodeA, rtp.Header{PayloadType: 101, SequenceNumber: seq, Timestamp: start, SSRC: 7, Marker: i == 0},
			[]byte{5, end | 10, byte(duration >> 8), byte(duration)})
		pace()
	}
	ts = start + 25*160
	for range 15 {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: ts, SSRC: 7}, pcmuPayload(1))
		ts += 160
		pace()
	}
	time.Sleep(50 * time.Millisecond)
	q, _ := e.Delete("s1")
	if got := q.Legs[0].JitterMs; got > 5 {
		t.Fatalf("a stream on time with one digit shows %.1f ms of jitter", got)
	}
}

// A source that starts right after a long digit (a new SSRC: the phone
// restarted its stream) is continued after the digit on the outgoing
// timeline, not inside it: every packet of an event carries its start.
func TestStreamResumesAfterALongDigit(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.pcmuWithEvents(), b.pcmuWithEvents())
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 1, Timestamp: 0, SSRC: 7}, pcmuPayload(1))
	if _, ok := b.recv(2 * time.Second); !ok {
		t.Fatal("audio not relayed")
	}
	var start uint32
	for i, d := range []uint16{4000, 8000, 16000} {
		a.send(nodeA, rtp.Header{PayloadType: 101, SequenceNumber: uint16(2 + i), Timestamp: 160, SSRC: 7, Marker: i == 0},
			[]byte{5, 10, byte(d >> 8), byte(d)})
		p, ok := b.recv(2 * time.Second)
		if !ok {
			t.Fatal("event not relayed")
		}
		start = p.Timestamp
	}
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 500, Timestamp: 90000, SSRC: 8}, pcmuPayload(1))
	p, ok := b.recv(2 * time.Second)
	if !ok {
		t.Fatal("the new source's audio not relayed")
	}
	if after := p.Timestamp - start; int32(after) < 16000 {
		t.Fatalf("the new source resumes %d ticks after the digit's start, inside its 16000", int32(after))
	}
}

func TestWrongSourceIsDroppedAndCounted(t *testing.T) {
	e, reg := newTestEngine(t, nil)
	a, b, attacker := newEndpoint(t), newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))

	attacker.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 1, SSRC: 66}, pcmuPayload(9))
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 1, SSRC: 1}, pcmuPayload(1))
	p, ok := b.recv(2 * time.Second)
	if !ok || p.SSRC != 1 {
		t.Fatalf("legitimate packet: ok %v ssrc %d", ok, p.SSRC)
	}
	b.expectNothing(100 * time.Millisecond)
	// The attacker's packet never reaches B, and it is not sent anything.
	attacker.expectNothing(10 * time.Millisecond)
	want := `
# HELP media_dropped_packets_total Packets discarded by the media engine, by reason.
# TYPE media_dropped_packets_total counter
media_dropped_packets_total{reason="codec_error"} 0
media_dropped_packets_total{reason="malformed"} 0
media_dropped_packets_total{reason="no_destination"} 0
media_dropped_packets_total{reason="too_late"} 0
media_dropped_packets_total{reason="unknown_payload_type"} 0
media_dropped_packets_total{reason="wrong_source"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "media_dropped_packets_total"); err != nil {
		t.Fatal(err)
	}
	q, _ := e.Delete("s1")
	if q.Legs[0].Dropped.WrongSource != 1 {
		t.Fatalf("leg A drops = %+v", q.Legs[0].Dropped)
	}
}

// An endpoint whose stack writes its IPv4 address in IPv6 form
// (c=IN IP6 ::ffff:a.b.c.d) sends from plain a.b.c.d: that is its
// signalled source, and its audio is relayed both ways.
func TestMappedIPv6ConnectionAddressIsTheIPv4Endpoint(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	mapped := bytes.ReplaceAll(a.sdp("0"), []byte("c=IN IP4 127.0.0.1"), []byte("c=IN IP6 ::ffff:127.0.0.1"))
	nodeA, nodeB, _ := bridge(t, e, "s1", mapped, b.sdp("0"))
	relays(t, "B to A", b, nodeB, 1, a)
	a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 2, SSRC: 2}, pcmuPayload(2))
	if _, ok := b.recv(time.Second); !ok {
		q, _ := e.Delete("s1")
		t.Fatalf("A (c=IN IP6 ::ffff:127.0.0.1) to B not relayed; A's drops %+v", q.Legs[0].Dropped)
	}
}

func TestLatching(t *testing.T) {
	tests := []struct {
		name     string
		allow    bool
		wantPass bool
	}{
		{name: "allowed latches onto the NAT address", allow: true, wantPass: true},
		{name: "not allowed drops it", allow: false, wantPass: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, func(c *Config) { c.AllowLatching = tc.allow })
			a, b := newEndpoint(t), newEndpoint(t)
			nat := newEndpoint(t) // A's packets really come from here
			nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
			nat.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 1, SSRC: 1}, pcmuPayload(1))
			_, ok := b.recv(300 * time.Millisecond)
			if ok != tc.wantPass {
				t.Fatalf("delivered = %v, want %v", ok, tc.wantPass)
			}
			if !tc.wantPass {
				return
			}
			// Media for A now goes to the latched address, not the SDP's.
			relays(t, "return media to the latched address", b, nodeB, 1, nat)
			// Another source cannot move the latch.
			stranger := newEndpoint(t)
			stranger.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: 2, SSRC: 7}, pcmuPayload(7))
			b.expectNothing(100 * time.Millisecond)
			relays(t, "return media after a stranger's packet", b, nodeB, 2, nat)
			stranger.expectNothing(100 * time.Millisecond)
			// The signalled address takes the leg back: it is the
			// endpoint by its own SDP.
			relays(t, "media from the signalled address", a, nodeA, 3, b)
			relays(t, "return media to the signalled address", b, nodeB, 3, a)
		})
	}
}

// Latching takes only the call's own RTP: a stranger's datagram that is
// not RTP, or carries a payload type the call did not negotiate, latches
// nothing, and the endpoint that comes next gets its leg.
func TestLatchingIgnoresNoise(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) { c.AllowLatching = true })
	a, b, nat, stranger := newEndpoint(t), newEndpoint(t), newEndpoint(t), newEndpoint(t)
	nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	if _, err := stranger.rtp.WriteToUDPAddrPort([]byte{0xff}, nodeA); err != nil {
		t.Fatal(err)
	}
	stranger.send(nodeA, rtp.Header{PayloadType: 18, SequenceNumber: 1, SSRC: 7}, []byte{1, 2})
	b.expectNothing(100 * time.Millisecond)
	relays(t, "the endpoint's first packet after the noise", nat, nodeA, 1, b)
	relays(t, "return media to the endpoint", b, nodeB, 1, nat)
	stranger.expectNothing(100 * time.Millisecond)
	q, _ := e.Delete("s1")
	if d := q.Legs[0].Dropped; d.Malformed != 1 || d.UnknownPayloadType != 1 {
		t.Fatalf("drops = %+v, want the noise counted", d)
	}
}

// relays sends one PCMU packet from from to the node's address node and
// fails unless it reaches to.
func relays(t *testing.T, what string, from *endpoint, node netip.AddrPort, seq uint16, to *endpoint) {
	t.Helper()
	from.send(node, rtp.Header{PayloadType: 0, SequenceNumber: seq, SSRC: uint32(seq)}, pcmuPayload(byte(seq)))
	if _, ok := to.recv(2 * time.Second); !ok {
		t.Fatalf("%s: not relayed", what)
	}
}

func TestMalformedAndUnknownPayloadType(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	if _, err := a.rtp.WriteToUDPAddrPort([]byte{0x40, 0, 1}, nodeA); err != nil { // version 1, short
		t.Fatal(err)
	}
	a.send(nodeA, rtp.Header{PayloadType: 18, SequenceNumber: 1, SSRC: 1}, []byte{1, 2}) // G.729, not negotiated
	b.expectNothing(150 * time.Millisecond)
	q, _ := e.Delete("s1")
	if q.Legs[0].Dropped.Malformed != 1 || q.Legs[0].Dropped.UnknownPayloadType != 1 {
		t.Fatalf("drops = %+v", q.Legs[0].Dropped)
	}
}

// Packets that arrived but that the node discards for their payload type
// were not lost by the network: RFC 3550 A.3 counts every packet of the
// source as received, so the call is not rated as having lost them.
func TestDiscardedPayloadTypeIsNotLoss(t *testing.T) {
	tests := []struct {
		desc      string
		sdpA      func(*endpoint) []byte
		discarded uint8
	}{
		{
			desc:      "comfort noise never negotiated",
			sdpA:      func(a *endpoint) []byte { return a.sdp("0") },
			discarded: 13,
		},
		{
			desc:      "DTMF the far leg cannot take",
			sdpA:      (*endpoint).pcmuWithEvents,
			discarded: 101,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			nodeA, _, _ := bridge(t, e, "s1", tt.sdpA(a), b.sdp("0"))
			relayed := 0
			for i := range 23 {
				pt := uint8(0)
				if i >= 10 && i < 13 {
					pt = tt.discarded
				}
				a.send(nodeA, rtp.Header{PayloadType: pt, SequenceNumber: uint16(100 + i), Timestamp: uint32(i * 160), SSRC: 9}, pcmuPayload(1))
				if pt == 0 {
					relayed++
				}
			}
			receiveAll(t, b, relayed)
			q, err := e.Delete("s1")
			if err != nil {
				t.Fatal(err)
			}
			if q.Legs[0].Dropped.UnknownPayloadType != 3 {
				t.Fatalf("drops = %+v, want the 3 of payload type %d", q.Legs[0].Dropped, tt.discarded)
			}
			if got := q.Legs[0].Lost; got != 0 {
				t.Fatalf("leg A Lost = %d, want 0: every packet arrived (3 were discarded by the node, not lost)", got)
			}
		})
	}
}

// The signalled RTCP address is the endpoint by its own SDP, as it is for
// RTP (admitRTP): a datagram from another port of the RTP source's host
// (another phone behind the same NAT, a scanner on the same host) may be
// latched onto, but it must not lock the endpoint's own RTCP out.
func TestSignalledRTCPAddressTakesTheLatchBack(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) { c.AllowLatching = true })
	a, b := newEndpoint(t), newEndpoint(t)
	stranger := newEndpoint(t) // 127.0.0.1 too, another port
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	// A's RTP from its signalled address latches the leg onto it.
	relays(t, "A's first packet", a, nodeA, 1, b)
	nodeARTCP := netip.AddrPortFrom(nodeA.Addr(), nodeA.Port()+1)
	strangerRR := []byte{0x80, 201, 0, 1, 0, 0, 0, 0x77}
	if _, err := stranger.rtcp.WriteToUDPAddrPort(strangerRR, nodeARTCP); err != nil {
		t.Fatal(err)
	}
	// Relayed, so taken from the RTP source's host: RTCP latched onto it.
	if !b.awaitRTCP(strangerRR, time.Second) {
		t.Fatal("the same-host RTCP was not latched onto")
	}
	aRR := []byte{0x80, 201, 0, 1, 0, 0, 0, 1}
	if _, err := a.rtcp.WriteToUDPAddrPort(aRR, nodeARTCP); err != nil {
		t.Fatal(err)
	}
	if !b.awaitRTCP(aRR, time.Second) {
		q, _ := e.Delete("s1")
		t.Fatalf("A's RTCP from its signalled address was not relayed (leg A drops %+v)", q.Legs[0].Dropped)
	}
	// Taken back: the stranger's RTCP is now from the wrong source.
	if _, err := stranger.rtcp.WriteToUDPAddrPort(strangerRR, nodeARTCP); err != nil {
		t.Fatal(err)
	}
	if b.awaitRTCP(strangerRR, 150*time.Millisecond) {
		t.Fatal("the same-host RTCP was still taken after the signalled address took the latch back")
	}
}

// awaitRTCP reads ep's RTCP socket until want arrives, and reports false if
// it does not within timeout.
func (ep *endpoint) awaitRTCP(want []byte, timeout time.Duration) bool {
	buf := make([]byte, 1500)
	_ = ep.rtcp.SetReadDeadline(time.Now().Add(timeout))
	for {
		n, err := ep.rtcp.Read(buf)
		if err != nil {
			return false
		}
		if bytes.Equal(buf[:n], want) {
			return true
		}
	}
}

func TestRTCPRelayed(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	// An empty receiver report from A to the node's RTCP port (RTP + 1).
	rr := []byte{0x80, 201, 0, 1, 0, 0, 0, 1}
	rtcpPort := nodeA.Port() + 1
	if _, err := a.rtcp.WriteToUDPAddrPort(rr, netip.AddrPortFrom(nodeA.Addr(), rtcpPort)); err != nil {
		t.Fatal(err)
	}
	_ = b.rtcp.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 100)
	n, err := b.rtcp.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], rr) {
		t.Fatalf("rtcp not relayed to B's rtcp port: %v %x", err, buf[:n])
	}
}

func TestOfferRejectsBadInputAndLeavesNothing(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	ep := newEndpoint(t)
	tests := []struct {
		name string
		sdp  []byte
		want error
	}{
		{name: "garbage", sdp: []byte("INVITE sip:bob@example.com"), want: ErrBadSDP},
		{name: "no audio", sdp: []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n"), want: ErrBadSDP},
		{name: "only unknown codec", sdp: ep.sdp("18", "a=rtpmap:18 G729/8000"), want: ErrUnsupportedCodec},
		{name: "srtp", sdp: []byte(strings.Replace(string(ep.sdp("0")), "RTP/AVP", "RTP/SAVP", 1)), want: ErrUnsupportedCodec},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Offer(context.Background(), OfferParams{SessionID: "bad", SDP: tc.sdp})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if e.Active() != 0 || e.pool.InUse() != 0 {
				t.Fatalf("left %d sessions, %d port pairs", e.Active(), e.pool.InUse())
			}
		})
	}
	if _, _, err := e.Answer(context.Background(), "nope", ep.sdp("0"), false); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("answer unknown session: %v", err)
	}
}

func TestAnswerRejectsBadInputAndKeepsSession(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := context.Background()
	if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Answer(ctx, "s1", []byte("nonsense"), false); !errors.Is(err, ErrBadSDP) {
		t.Fatalf("bad answer: %v", err)
	}
	if _, _, err := e.Answer(ctx, "s1", b.sdp("18", "a=rtpmap:18 G729/8000"), false); !errors.Is(err, ErrUnsupportedCodec) {
		t.Fatalf("unsupported answer: %v", err)
	}
	// The session survives and can still be answered properly.
	if _, _, err := e.Answer(ctx, "s1", b.sdp("0"), false); err != nil {
		t.Fatal(err)
	}
}

func TestOfferRetryIsIdempotent(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a := newEndpoint(t)
	ctx := context.Background()
	first, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0")})
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0")})
	if err != nil || !bytes.Equal(first, again) {
		t.Fatalf("retried offer: %v", err)
	}
	if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("8")}); !errors.Is(err, ErrSessionExists) {
		t.Fatalf("conflicting offer: %v", err)
	}
	if e.pool.InUse() != 2 {
		t.Fatalf("%d port pairs in use, want 2", e.pool.InUse())
	}
}

func TestPortExhaustion(t *testing.T) {
	// Three pairs nobody else holds right now: the test counts on binding
	// every one of them.
	first := freePortRange(t, 6)
	e, _ := newTestEngine(t, func(c *Config) { c.PortMin, c.PortMax = first, first+5 })
	a := newEndpoint(t)
	ctx := context.Background()
	if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0")}); err != nil {
		t.Fatal(err)
	}
	// One pair left: a bridge needs two.
	if _, err := e.Offer(ctx, OfferParams{SessionID: "s2", SDP: a.sdp("0")}); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("err = %v, want ErrNoPorts", err)
	}
	if e.Active() != 1 || e.pool.InUse() != 2 {
		t.Fatalf("%d sessions, %d pairs", e.Active(), e.pool.InUse())
	}
	// A service needs only one.
	if _, err := e.Offer(ctx, OfferParams{SessionID: "s3", SDP: a.sdp("0"), Service: ServiceEcho}); err != nil {
		t.Fatal(err)
	}
}

// freePortRange finds n consecutive free UDP ports (starting even) above the
// range the other engine tests share.
func freePortRange(t *testing.T, n int) int {
	t.Helper()
	for start := testPortMax + 1; start+n < testPortMax+2000; start += n {
		free := true
		for p := start; p < start+n && free; p++ {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
			if err != nil {
				free = false
				continue
			}
			c.Close()
		}
		if free {
			return start
		}
	}
	t.Fatal("no free port range")
	return 0
}
