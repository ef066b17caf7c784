package sipproxy

import (
	"net"
	"strconv"
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

// A 2xx retransmitted after the branch's client transaction is gone (past
// the transaction linger) is relayed statelessly along its Vias, so the
// caller still gets it and ACKs.
func TestLate2xxRelayedStatelessly(t *testing.T) {
	p := startProxy(t, trustedConfig())
	callerConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = callerConn.Close() })
	gwConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gwConn.Close() })
	proxyHost, proxyPort, _ := net.SplitHostPort(p.Addr("udp"))
	callerPort := callerConn.LocalAddr().(*net.UDPAddr).Port
	ok := "SIP/2.0 200 OK\r\n" +
		"Via: SIP/2.0/UDP " + proxyHost + ":" + proxyPort + ";branch=" + p.newBranch("0123456789abcdef", "late-2xx@test") + "\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(callerPort) + ";branch=z9hG4bK-late;rport=" + strconv.Itoa(callerPort) + ";received=127.0.0.1\r\n" +
		"From: <sip:alice@localhost>;tag=a1\r\n" +
		"To: <sip:+15551234@127.0.0.1>;tag=b1\r\n" +
		"Call-ID: late-2xx@test\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:127.0.0.1:" + strconv.Itoa(gwConn.LocalAddr().(*net.UDPAddr).Port) + ">\r\n" +
		"Content-Length: 0\r\n\r\n"
	proxyAddr, _ := net.ResolveUDPAddr("udp", p.Addr("udp"))
	// The caller has sent its INVITE: the proxy knows its flow. A keep-alive
	// stands in for it; the socket's reader takes it before the 200.
	if _, err := callerConn.WriteToUDP([]byte("\r\n\r\n"), proxyAddr); err != nil {
		t.Fatal(err)
	}
	if _, err := gwConn.WriteToUDP([]byte(ok), proxyAddr); err != nil {
		t.Fatal(err)
	}
	_ = callerConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := callerConn.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("caller got no relayed 2xx: %v", err)
	}
	msg, err := sip.ParseMessage(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	res, isRes := msg.(*sip.Response)
	if !isRes || res.StatusCode != 200 {
		t.Fatalf("caller got %q, want the 200", buf[:n])
	}
	if vias := res.GetHeaders("Via"); len(vias) != 1 {
		t.Errorf("relayed 2xx has %d Vias, want 1: the proxy's is removed", len(vias))
	}
}
