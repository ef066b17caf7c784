package sipproxy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestRewritten503CarriesNoDownstreamRetryAfter: a gateway's 503 goes
// upstream as 500 (RFC 3261 16.7 step 6), and without the gateway's
// Retry-After, which says when the gateway takes calls again: on our 500
// the caller would read it as this proxy's (RFC 3261 21.5.1).
func TestRewritten503CarriesNoDownstreamRetryAfter(t *testing.T) {
	gw := newRawGateway(t, sip.StatusServiceUnavailable)
	gw.retryAfter.Store(120)
	p := startProxy(t, pstnConfig(PolicyRoundRobin, gw))
	caller := newPeer(t, "caller")
	res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:+15551234@localhost", "alice"))
	if res.StatusCode != sip.StatusInternalServerError {
		t.Fatalf("caller got %d, want 500 for the gateway's 503", res.StatusCode)
	}
	if h := res.GetHeader("Retry-After"); h != nil {
		t.Fatalf("the 500 carries the gateway's Retry-After: %s", h.Value())
	}
}

// TestRewritten503CarriesNoRetryAfterWhateverItsCase: header names are
// case-insensitive (RFC 3261 7.3.1), so a gateway's "retry-after" is the
// same Retry-After, and is not on the 500 either; sipgo keeps an unknown
// header's name as it came and removes headers by exact name.
func TestRewritten503CarriesNoRetryAfterWhateverItsCase(t *testing.T) {
	gw := newUDPEnd(t)
	gwAddr := "127.0.0.1:" + strconv.Itoa(gw.port)
	cfg := trustedConfig()
	cfg.GatewayGroups = []GatewayGroup{{Name: "pstn", Gateways: []Gateway{{Name: "a", Addr: gwAddr, Transport: "udp"}}}}
	cfg.Dialplan = []DialplanRule{{Name: "e164", Regex: `^\+?[0-9]+$`, Group: "pstn"}}
	p := startProxy(t, cfg)
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := gw.conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			req, ok := msg.(*sip.Request)
			if err != nil || !ok || !req.IsInvite() {
				continue
			}
			res := sip.NewResponseFromRequest(req, sip.StatusServiceUnavailable, "Service Unavailable", nil)
			res.To().Params.Add("tag", "gw")
			res.AppendHeader(sip.NewHeader("retry-after", "120"))
			_, _ = gw.conn.WriteToUDP([]byte(res.String()), from)
		}
	}()
	caller := newPeer(t, "caller")
	res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:+15551234@localhost", "alice"))
	if res.StatusCode != sip.StatusInternalServerError {
		t.Fatalf("caller got %d, want 500 for the gateway's 503", res.StatusCode)
	}
	for _, h := range res.Headers() {
		if strings.EqualFold(h.Name(), "Retry-After") {
			t.Fatalf("the 500 carries the gateway's Retry-After: %s: %s", h.Name(), h.Value())
		}
	}
}
