package sipproxy

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestSecond2xxOfForkingDownstreamReachesTCPCaller: a downstream that
// forks answers one INVITE branch with two 2xx of different To tags. On a
// caller's TCP connection the second goes upstream at once, as on UDP
// (RFC 3261 16.7 step 5), not only once the transaction linger is over,
// when the callee's retransmission would be relayed statelessly.
func TestSecond2xxOfForkingDownstreamReachesTCPCaller(t *testing.T) {
	cfg := trustedConfig()
	cfg.Transports = []string{"udp", "tcp"}
	p := startProxy(t, cfg)
	callee := addRawContact(t, p, "first")
	conn, err := net.DialTimeout("tcp", p.Addr("tcp"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	caller := &streamPhone{t: t, conn: conn, r: bufio.NewReader(conn)}
	local := conn.LocalAddr().String()
	const callID = "tcp-forking-downstream@test"
	caller.send("INVITE sip:bob@localhost SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP " + local + ";branch=z9hG4bK-tcpfork1\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:alice@localhost>;tag=caller1\r\n" +
		"To: <sip:bob@localhost>\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:alice@" + local + ";transport=tcp>\r\n" +
		"Content-Length: 0\r\n\r\n")
	inv := callee.invite(t)
	callee.respond(t, p, inv, sip.StatusOK, nil)
	sent := time.Now()
	for {
		res, ok := caller.nextUntil(sent.Add(3 * time.Second)).(*sip.Response)
		if ok && res.IsSuccess() {
			break
		}
	}
	// The proxy is done with the request once the first 2xx is relayed.
	waitFor(t, "the request handled", func() bool { return p.InFlight() == 0 })
	callee.tag = "second"
	callee.respond(t, p, inv, sip.StatusOK, nil)

	before := sent.Add(Config{}.WithDefaults().TransactionLinger - time.Second)
	got := map[string]bool{"first": true}
	for len(got) < 2 {
		res, ok := caller.nextUntil(before).(*sip.Response)
		if ok && res.IsSuccess() && res.CallID().Value() == callID {
			got[toTag(res)] = true
		}
	}
	if !got["first"] || !got["second"] {
		t.Fatalf("the caller got the 2xx of %v, want first and second", got)
	}
}
