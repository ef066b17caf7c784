package engine

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A callee's RTP that reaches the node before its answer (it has the
// node's address from the offer; the answer is still on its way) has
// nowhere to go yet. It is the call's own traffic, so it counts in the
// leg's packets and as no_destination, the reason an operator looks for
// a call's first packets under, not as wrong_source, which says RTP bleed;
// so does its RTCP. Once the answer is in, a stranger is a wrong source
// again.
func TestPacketsBeforeTheAnswerAreCountedAsNoDestination(t *testing.T) {
	e, reg := newTestEngine(t, nil)
	a, b, stranger := newEndpoint(t), newEndpoint(t), newEndpoint(t)
	ctx := context.Background()
	offer, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0")})
	if err != nil {
		t.Fatal(err)
	}
	nodeB := nodeAddr(t, offer)
	for i := range 3 {
		b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 2}, pcmuPayload(2))
	}
	rr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 2}})
	if _, err := b.rtcp.WriteToUDPAddrPort(rr, netip.AddrPortFrom(nodeB.Addr(), nodeB.Port()+1)); err != nil {
		t.Fatal(err)
	}
	s, _ := e.lookup("s1")
	lb := s.legs[1]
	deadline := time.Now().Add(2 * time.Second)
	for lb.drops[dropNoDestination].Load()+lb.drops[dropWrongSource].Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if _, _, err := e.Answer(ctx, "s1", b.sdp("0"), false); err != nil {
		t.Fatal(err)
	}
	stranger.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: 9, SSRC: 66}, pcmuPayload(9))
	b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: 3, Timestamp: 3 * 160, SSRC: 2}, pcmuPayload(2))
	receiveAll(t, a, 1)
	want := `
# HELP media_dropped_packets_total Packets discarded by the media engine, by reason.
# TYPE media_dropped_packets_total counter
media_dropped_packets_total{reason="codec_error"} 0
media_dropped_packets_total{reason="malformed"} 0
media_dropped_packets_total{reason="no_destination"} 4
media_dropped_packets_total{reason="too_late"} 0
media_dropped_packets_total{reason="unknown_payload_type"} 0
media_dropped_packets_total{reason="wrong_source"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "media_dropped_packets_total"); err != nil {
		t.Fatal(err)
	}
	q, _ := e.Delete("s1")
	if got := q.Legs[1]; got.PacketsIn != 4 || got.BytesIn != 4*(rtpHeaderLen+160) || got.Dropped.NoDestination != 4 || got.Dropped.WrongSource != 1 {
		t.Fatalf("leg B: %d packets, %d bytes in, drops %+v; want 4 packets of 172 bytes, 4 with no destination, 1 from a wrong source", got.PacketsIn, got.BytesIn, got.Dropped)
	}
}
