package sipproxy

import (
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
