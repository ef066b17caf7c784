package engine

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/sdpneg"
)

// recvReport waits for a receiver report on the endpoint's RTCP socket.
func (ep *endpoint) recvReport(timeout time.Duration) *rtcp.ReceiverReport {
	ep.t.Helper()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for {
		_ = ep.rtcp.SetReadDeadline(deadline)
		n, err := ep.rtcp.Read(buf)
		if err != nil {
			ep.t.Fatalf("no receiver report: %v", err)
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			ep.t.Fatalf("malformed rtcp from node: %v", err)
		}
		if rr, ok := pkts[0].(*rtcp.ReceiverReport); ok && len(rr.Reports) > 0 {
			if _, ok := pkts[len(pkts)-1].(*rtcp.SourceDescription); !ok {
				ep.t.Fatal("compound report without SDES")
			}
			return rr
		}
	}
}

func TestReceiverReportsWhenTerminating(t *testing.T) {
	tests := []struct {
		name    string
		service Service
		answer  []string // B's answer formats and attributes; empty for a service
	}{
		{name: "echo", service: ServiceEcho},
		{name: "tone", service: ServiceTone},
		{name: "transcoding bridge", answer: []string{"111", "a=rtpmap:111 opus/48000/2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			e.rtcpEvery = 50 * time.Millisecond
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := context.Background()
			reply, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0"), Service: tc.service})
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.answer) > 0 {
				if reply, _, err = e.Answer(ctx, "s1", b.sdp(tc.answer[0], tc.answer[1:]...), false); err != nil {
					t.Fatal(err)
				}
			}
			d, _ := sdpneg.Parse(reply)
			for i := range 20 {
				if i == 10 {
					continue // one lost packet, to see it reported
				}
				a.send(d.Audio().RTP(), rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 42}, pcmuPayload(0xff))
			}
			// Reports are periodic: wait for one that covers every packet.
			deadline := time.Now().Add(2 * time.Second)
			block := a.recvReport(2 * time.Second).Reports[0]
			for block.LastSequenceNumber < 19 && time.Now().Before(deadline) {
				block = a.recvReport(time.Until(deadline)).Reports[0]
			}
			if block.SSRC != 42 || block.LastSequenceNumber != 19 || block.TotalLost != 1 {
				t.Fatalf("report block = %+v", block)
			}
		})
	}
}

// Relayed RTCP follows the relay's numbering once it is no longer the
// source's own (here A changed SSRC and sequence mid-call): B gets A's
// sender reports under the SSRC and timeline it receives A's audio on, and
// A gets B's reports about that audio under A's own SSRC and sequence.
func TestRelayedRTCPFollowsTheRelayedNumbering(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
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
	rtcpAt := func(node netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(node.Addr(), node.Port()+1) }
	readRTCP := func(ep *endpoint) []rtcp.Packet {
		t.Helper()
		buf := make([]byte, 1500)
		_ = ep.rtcp.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := ep.rtcp.Read(buf)
		if err != nil {
			t.Fatalf("no rtcp relayed: %v", err)
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			t.Fatalf("relayed rtcp malformed: %v", err)
		}
		return pkts
	}

	// A's sender report on its new stream: the RTP time of its last packet.
	sr, _ := rtcp.Marshal([]rtcp.Packet{
		&rtcp.SenderReport{SSRC: 0x2222, NTPTime: 1 << 40, RTPTime: 900000 + 9*160, PacketCount: 5, OctetCount: 800},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 0x2222, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "a"}}}}},
	})
	if _, err := a.rtcp.WriteToUDPAddrPort(sr, rtcpAt(nodeA)); err != nil {
		t.Fatal(err)
	}
	pkts := readRTCP(b)
	got, ok := pkts[0].(*rtcp.SenderReport)
	if !ok || got.SSRC != last.SSRC || got.RTPTime != last.Timestamp {
		t.Fatalf("B got %+v, want the SR from SSRC %#x at RTP time %d", pkts[0], last.SSRC, last.Timestamp)
	}
	if sdes := pkts[1].(*rtcp.SourceDescription); sdes.Chunks[0].Source != last.SSRC {
		t.Fatalf("SDES chunk from %#x, want %#x", sdes.Chunks[0].Source, last.SSRC)
	}

	// B's receiver report on what it got, in the numbering it got it in.
	rr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 0x3333, Reports: []rtcp.ReceptionReport{{
		SSRC: last.SSRC, LastSequenceNumber: 1<<16 | uint32(last.SequenceNumber),
	}}}})
	if _, err := b.rtcp.WriteToUDPAddrPort(rr, rtcpAt(nodeB)); err != nil {
		t.Fatal(err)
	}
	report, ok := readRTCP(a)[0].(*rtcp.ReceiverReport)
	if !ok || len(report.Reports) != 1 {
		t.Fatalf("A got %+v", report)
	}
	if block := report.Reports[0]; block.SSRC != 0x2222 || uint16(block.LastSequenceNumber) != 7009 {
		t.Fatalf("A's report block: SSRC %#x, highest sequence %d; want 0x2222 and 7009", block.SSRC, uint16(block.LastSequenceNumber))
	}
}

// FuzzTranslateRTCP: any compound packet whose framing passes validRTCP
// is translated without a panic or a read outside it.
func FuzzTranslateRTCP(f *testing.F) {
	sr, _ := rtcp.Marshal([]rtcp.Packet{
		&rtcp.SenderReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 4}}},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 1, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "x"}}}}},
		&rtcp.Goodbye{Sources: []uint32{1}},
		&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 4},
	})
	f.Add(sr)
	f.Add([]byte{0x81, 202, 0, 1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if !validRTCP(pkt) {
			return
		}
		own := outStream{started: true, ssrc: 2, inSSRC: 1, seqDelta: 7, tsDelta: 9}
		received := outStream{started: true, ssrc: 4, inSSRC: 3, seqDelta: 5}
		translateRTCP(pkt, &own, &received)
	})
}
