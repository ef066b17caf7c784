package sipproxy

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The ACK for a 2xx is forwarded by takeACK along the route set; the ACK
// for a non-2xx answer stays with the INVITE's server transaction, which
// then stops retransmitting its answer and relays nothing.
func TestACKRouting(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		wantRelays int // ACKs reaching the gateway from the caller's side
	}{
		{name: "2xx ack is forwarded", status: 200, wantRelays: 1},
		{name: "non-2xx ack stays with the transaction", status: 486, wantRelays: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw := newRawGateway(t, tc.status)
			p := startProxy(t, pstnConfig(PolicyRoundRobin, gw))
			caller := newPeer(t, "caller")
			// An address, not a name, in the Request-URI: takeACK only takes
			// ACKs whose next hop needs no resolution.
			invite := caller.request(sip.INVITE, "sip:+15551234@127.0.0.1", "alice")
			res := caller.do(t, p.Addr("udp"), invite)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			// sipgo's client acknowledged a non-2xx itself; a 2xx is the caller's to ACK.
			if res.IsSuccess() {
				ack := inDialog(sip.ACK, invite, res, invite.CSeq().SeqNo)
				ack.SetDestination(routeDestination(ack))
				if err := caller.cli.WriteRequest(ack); err != nil {
					t.Fatal(err)
				}
			}
			// The proxy's own hop-by-hop ACK of a non-2xx reaches the gateway
			// too; past Timer G an unabsorbed ACK would show as a repeated answer.
			time.Sleep(3 * sip.T1)
			wantHandled := float64(tc.wantRelays)
			if got := testutil.ToFloat64(p.m.requests.WithLabelValues("ACK")); got != wantHandled {
				t.Errorf("proxy handled %v ACKs as requests, want %v", got, wantHandled)
			}
			wantAtGateway := tc.wantRelays
			if !res.IsSuccess() {
				wantAtGateway = 1 // the proxy's client transaction acknowledges the 486
			}
			if got := gw.count(sip.ACK); got != wantAtGateway {
				t.Errorf("gateway got %d ACKs, want %d", got, wantAtGateway)
			}
			if got := gw.count(sip.INVITE); got != 1 {
				t.Errorf("gateway got %d INVITEs, want 1", got)
			}
		})
	}
}
