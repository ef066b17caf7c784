package engine

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// paddedHeader is an RTP header with everything a sender may add to the
// fixed twelve bytes: two CSRCs, a one-byte header extension and eight
// octets of padding. None of it is payload.
func paddedHeader(pt uint8, seq uint16, ts, ssrc uint32) rtp.Header {
	h := rtp.Header{PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc, CSRC: []uint32{7, 8}, Padding: true, PaddingSize: 8}
	if err := h.SetExtension(1, []byte{0xaa, 0xbb}); err != nil {
		panic(err)
	}
	return h
}

// drainFor reads every RTP packet that arrives at ep until quiet passes
// without one, and returns them with the last one's arrival.
func drainFor(ep *endpoint, quiet time.Duration) ([]rtp.Packet, time.Time) {
	var (
		got  []rtp.Packet
		last time.Time
	)
	for {
		p, ok := ep.recv(quiet)
		if !ok {
			return got, last
		}
		got, last = append(got, p), time.Now()
	}
}

// srAfter waits for a sender report to ep whose NTP time is after since,
// and fails after two seconds without one.
func srAfter(t *testing.T, ep *endpoint, since time.Time) *rtcp.SenderReport {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		report, _, ok := ep.tryCompound(time.Until(deadline))
		if !ok {
			t.Fatal("no sender report after the stream")
		}
		if sr, isSR := report[0].(*rtcp.SenderReport); isSR && ntpToTime(sr.NTPTime).After(since) {
			return sr
		}
	}
}

// The sender's octet count in the node's sender reports is of payload
// octets alone, not header or padding (RFC 3550 §6.4.1), also for the
// packets it passes on as they came, with the sender's CSRCs, header
// extension and padding: the caller's own audio echoed back, and the
// telephone events a transcoding bridge carries across unchanged.
func TestSenderReportsCountPayloadOctetsOnly(t *testing.T) {
	event := func(end bool, duration uint16) []byte {
		flags := byte(10) // volume
		if end {
			flags |= 0x80
		}
		return []byte{1, flags, byte(duration >> 8), byte(duration)}
	}
	tests := []struct {
		name    string
		service Service
		answer  []string // B's answer, for a bridge
		send    func(a *endpoint, node netip.AddrPort)
	}{
		{
			name:    "echo",
			service: ServiceEcho,
			send: func(a *endpoint, node netip.AddrPort) {
				for i := range 10 {
					a.send(node, paddedHeader(0, uint16(i), uint32(i*160), 42), pcmuPayload(0xff))
				}
			},
		},
		{
			name:   "events across a transcoder",
			answer: []string{"8 101", "a=rtpmap:101 telephone-event/8000"},
			send: func(a *endpoint, node netip.AddrPort) {
				for i := range 5 {
					a.send(node, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 42}, pcmuPayload(0xff))
				}
				for i := range 3 {
					h := paddedHeader(101, uint16(5+i), 5*160, 42)
					h.Marker = i == 0
					a.send(node, h, event(i == 2, uint16(160*(i+1))))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			e.rtcpEvery = 150 * time.Millisecond
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := context.Background()
			reply, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0 101", "a=rtpmap:101 telephone-event/8000"), Service: tc.service})
			if err != nil {
				t.Fatal(err)
			}
			to := a
			if tc.answer != nil {
				if reply, _, err = e.Answer(ctx, "s1", b.sdp(tc.answer[0], tc.answer[1:]...), false); err != nil {
					t.Fatal(err)
				}
				to = b
			}
			tc.send(a, nodeAddr(t, reply))
			// The reports after the last packet are sender reports: a
			// sender is one that sent since the report before last.
			got, last := drainFor(to, 100*time.Millisecond)
			if len(got) == 0 {
				t.Fatal("nothing sent on")
			}
			payload, padded := 0, false
			for _, p := range got {
				payload += len(p.Payload)
				padded = padded || p.Padding
			}
			if !padded {
				t.Fatal("no packet sent on kept the sender's padding: the test proves nothing")
			}
			sr := srAfter(t, to, last)
			if int(sr.PacketCount) != len(got) || int(sr.OctetCount) != payload {
				t.Fatalf("SR counts %d packets, %d octets; %d packets with %d payload octets were sent", sr.PacketCount, sr.OctetCount, len(got), payload)
			}
		})
	}
}
