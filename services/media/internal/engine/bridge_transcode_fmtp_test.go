package engine

import (
	"context"
	"testing"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// Opus the node encodes towards an endpoint keeps to that endpoint's fmtp
// (RFC 7587 §6.1), which caps the node's configured settings: here
// maxaveragebitrate=12000 with cbr=1, so that every 20 ms packet is the
// 30 bytes of 12 kbit/s, whatever bitrate the node runs at otherwise.
func TestEncodedOpusKeepsToTheReceiversFmtp(t *testing.T) {
	const fmtp = "a=fmtp:111 maxaveragebitrate=12000;cbr=1;useinbandfec=0"
	tests := []struct {
		name    string
		service Service
	}{
		{name: "transcoding bridge", service: ServiceNone},
		{name: "tone", service: ServiceTone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, func(c *Config) { c.Opus = codec.DefaultOpusOptions() })
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := context.Background()
			to := b
			if tc.service == ServiceTone {
				to = a
				if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("111", "a=rtpmap:111 opus/48000/2", fmtp), Service: ServiceTone}); err != nil {
					t.Fatal(err)
				}
			} else {
				nodeA, _, transcoding := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", "a=rtpmap:111 opus/48000/2", fmtp))
				if !transcoding {
					t.Fatal("PCMU to Opus not transcoded")
				}
				for i, payload := range encodeTone(t, codec.PCMU, 8000, 10) {
					a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 7}, payload)
				}
			}
			for i, p := range receivePackets(t, to, 5) {
				if p.PayloadType != 111 || len(p.Payload) != 30 {
					t.Fatalf("Opus packet %d: PT %d, %d bytes; want PT 111 and 30 bytes (12 kbit/s, constant)", i, p.PayloadType, len(p.Payload))
				}
			}
		})
	}
}
