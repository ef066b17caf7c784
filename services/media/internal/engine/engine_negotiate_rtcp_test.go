package engine

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"testing"
)

// An a=rtcp address (RFC 3605) is held to the rule the c= address is: one
// of the family the node's sockets cannot reach, or that could not send
// to its advertised address, is refused as unsupported (a 488 at the
// proxy), offer and answer alike, rather than a call set up whose reports
// never arrive either way. With rtcp-mux the attribute's address is not
// used, and passes.
func TestRTCPAddressOfTheOtherFamilyIsRefused(t *testing.T) {
	withRTCP := func(ep *endpoint, raw []byte, addr string) []byte {
		port := ep.rtcp.LocalAddr().(*net.UDPAddr).Port
		return bytes.ReplaceAll(raw, fmt.Appendf(nil, "a=rtcp:%d", port), fmt.Appendf(nil, "a=rtcp:%d %s", port, addr))
	}
	tests := []struct {
		name    string
		addr    string
		attrs   []string
		refused bool
	}{
		{name: "IPv6 address", addr: "IN IP6 ::1", refused: true},
		{name: "IPv6 address with rtcp-mux", addr: "IN IP6 ::1", attrs: []string{"a=rtcp-mux"}},
		{name: "IPv4 address of another host", addr: "IN IP4 127.0.0.2"},
		{name: "IPv4 address in IPv6 form", addr: "IN IP6 ::ffff:127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := t.Context()
			_, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: withRTCP(a, a.sdp("0", tc.attrs...), tc.addr)})
			if got := errors.Is(err, ErrUnsupportedCodec); got != tc.refused {
				t.Fatalf("offer: %v, want refused %v", err, tc.refused)
			}
			if tc.refused {
				if e.Active() != 0 || e.pool.InUse() != 0 {
					t.Fatalf("refused offer left %d sessions, %d port pairs", e.Active(), e.pool.InUse())
				}
				if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0")}); err != nil {
					t.Fatal(err)
				}
			}
			_, _, err = e.Answer(ctx, "s1", withRTCP(b, b.sdp("0", tc.attrs...), tc.addr), false)
			if got := errors.Is(err, ErrUnsupportedCodec); got != tc.refused {
				t.Fatalf("answer: %v, want refused %v", err, tc.refused)
			}
		})
	}
}
