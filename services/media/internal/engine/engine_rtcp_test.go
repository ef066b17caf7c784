package engine

import (
	"context"
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
