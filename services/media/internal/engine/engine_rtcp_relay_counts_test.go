package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// relaySR sends a sender report from ep's RTCP socket to the node's RTCP
// port beside node, with a CNAME as every compound report carries, and
// returns the sender report the far endpoint is relayed.
func relaySR(t *testing.T, ep *endpoint, node netip.AddrPort, sr *rtcp.SenderReport, far *endpoint) *rtcp.SenderReport {
	t.Helper()
	raw, err := rtcp.Marshal([]rtcp.Packet{sr,
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: sr.SSRC, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "src"}}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ep.rtcp.WriteToUDPAddrPort(raw, netip.AddrPortFrom(node.Addr(), node.Port()+1)); err != nil {
		t.Fatal(err)
	}
	pkts, _, ok := far.tryCompound(2 * time.Second)
	if !ok {
		t.Fatal("sender report not relayed")
	}
	got, ok := pkts[0].(*rtcp.SenderReport)
	if !ok {
		t.Fatalf("relayed %T, want a sender report", pkts[0])
	}
	return got
}

// A relay that renumbers a new source into the stream the far end already
// knows (RFC 3550 §7.2: one SSRC, sequence and timestamps running on) is,
// to the far end, the sender of that one stream. The sender report it
// relays from the new source counts what the far end was sent under that
// SSRC (§6.4.1), both sources' packets, not the new source's alone: the
// far end would otherwise see its sender's counts fall back.
func TestRelayedSenderReportCountsTheWholeRenumberedStream(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	var last rtp.Packet
	for i := range 10 {
		ssrc, seq, ts := uint32(0x1111), uint16(100+i), uint32(i*160)
		if i >= 5 {
			ssrc, seq, ts = 0x2222, uint16(7000+i), uint32(900000+i*160)
		}
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, pcmuPayload(1))
		p, ok := b.recv(2 * time.Second)
		if !ok {
			t.Fatalf("packet %d not relayed", i)
		}
		last = p
	}
	sr := relaySR(t, a, nodeA, &rtcp.SenderReport{SSRC: 0x2222, NTPTime: 1 << 40, RTPTime: 900000 + 9*160, PacketCount: 5, OctetCount: 5 * 160}, b)
	if sr.SSRC != last.SSRC || sr.PacketCount != 10 || sr.OctetCount != 10*160 {
		t.Fatalf("B got an SR from %#x counting %d packets, %d octets; want %#x, the 10 packets of 160 octets it was sent", sr.SSRC, sr.PacketCount, sr.OctetCount, last.SSRC)
	}
}

// A relayed digit carried to another telephone-event clock takes segment
// ends the source never sent (RFC 4733 §2.5.1.3), each a packet of its own
// in the stream the far end receives. The sender report relayed after
// them counts them, as the far end received them: its packets and
// payload octets are those of the stream as sent, not as the source sent
// it.
func TestRelayedSenderReportCountsTheSegmentEndsInserted(t *testing.T) {
	const opus48 = "a=rtpmap:111 opus/48000/2"
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, transcoding := bridge(t, e, "s1",
		a.sdp("111 101", opus48, "a=rtpmap:101 telephone-event/8000"),
		b.sdp("111 96", opus48, "a=rtpmap:96 telephone-event/48000"))
	if transcoding {
		t.Fatal("Opus to Opus transcoded")
	}
	audio := encodeTone(t, codec.Opus, 48000, 1)[0]
	a.send(nodeA, rtp.Header{PayloadType: 111, SequenceNumber: 100, Timestamp: 1000, SSRC: 7}, audio)
	press := segmented(4000, 8000, 12000, 16000) // 2 s: two segments at 48 kHz
	seq := sendEvent(a, nodeA, 101, 7, 101, 5000, 1, press)
	a.send(nodeA, rtp.Header{PayloadType: 111, SequenceNumber: seq, Timestamp: 900000, SSRC: 7}, audio)
	sentByA := uint32(2 + len(press))
	octetsByA := uint32(2*len(audio) + eventBlockLen*len(press))

	var packets, octets uint32
	var ssrc uint32
	for audioSeen := 0; audioSeen < 2; {
		p, ok := b.recv(2 * time.Second)
		if !ok {
			t.Fatalf("after %d packets, the rest of the stream was not relayed", packets)
		}
		packets++
		octets += uint32(len(p.Payload))
		ssrc = p.SSRC
		if p.PayloadType == 111 {
			audioSeen++
		}
	}
	if packets <= sentByA {
		t.Fatalf("B got %d packets for the %d A sent: no segment end inserted, the test proves nothing", packets, sentByA)
	}
	sr := relaySR(t, a, nodeA, &rtcp.SenderReport{SSRC: 7, NTPTime: 1 << 40, RTPTime: 900000, PacketCount: sentByA, OctetCount: octetsByA}, b)
	if sr.SSRC != ssrc || sr.PacketCount != packets || sr.OctetCount != octets {
		t.Fatalf("B got an SR from %#x counting %d packets, %d octets; want %#x, the %d packets of %d payload octets it was sent",
			sr.SSRC, sr.PacketCount, sr.OctetCount, ssrc, packets, octets)
	}
}
