package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// With latching allowed, a caller behind a NAT may send RTP from an
// address its offer did not name before the callee answered. The leg has
// no route yet, so nothing is latched and the packet has nowhere to go;
// it is counted all the same, in the leg's packets and as no_destination,
// as a packet from the signalled address is then: the operator sees every
// packet that reached the node, under the reason it was dropped.
func TestLatchCandidateBeforeTheAnswerIsCounted(t *testing.T) {
	e, reg := newTestEngine(t, func(c *Config) { c.AllowLatching = true })
	a, nat := newEndpoint(t), newEndpoint(t)
	if _, err := e.Offer(context.Background(), OfferParams{SessionID: "s1", SDP: a.sdp("0")}); err != nil {
		t.Fatal(err)
	}
	s, err := e.lookup("s1")
	if err != nil {
		t.Fatal(err)
	}
	la := s.legs[0]
	const packets = 3
	for i := range packets {
		nat.send(la.local, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 5}, pcmuPayload(5))
	}
	deadline := time.Now().Add(2 * time.Second)
	for la.drops[dropNoDestination].Load() < packets && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	want := `
# HELP media_dropped_packets_total Packets discarded by the media engine, by reason.
# TYPE media_dropped_packets_total counter
media_dropped_packets_total{reason="codec_error"} 0
media_dropped_packets_total{reason="malformed"} 0
media_dropped_packets_total{reason="no_destination"} 3
media_dropped_packets_total{reason="too_late"} 0
media_dropped_packets_total{reason="unknown_payload_type"} 0
media_dropped_packets_total{reason="wrong_source"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "media_dropped_packets_total"); err != nil {
		t.Fatal(err)
	}
	if got := rtpPacketsIn(t, reg, "PCMU"); got != packets {
		t.Fatalf("media_rtp_packets_total in for PCMU is %v, want %d", got, packets)
	}
	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Legs[0]; got.PacketsIn != packets || got.BytesIn != packets*(rtpHeaderLen+160) || got.Dropped.NoDestination != packets {
		t.Fatalf("leg A: %d packets, %d bytes in, drops %+v; want %d packets of %d bytes, each with no destination",
			got.PacketsIn, got.BytesIn, got.Dropped, packets, rtpHeaderLen+160)
	}
}

// rtpPacketsIn is the media_rtp_packets_total counter of packets in of
// codec name, as reg exposes it.
func rtpPacketsIn(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "media_rtp_packets_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["direction"] == "in" && labels["codec"] == name {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no media_rtp_packets_total in for %s", name)
	return 0
}
