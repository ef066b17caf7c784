package sipproxy

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestDialledIdleConnectionIsClosed: a TCP connection the proxy dialled
// (here to a gateway) is closed once it stays quiet for tcp_idle_timeout,
// like one a peer opened; sipgo keeps a dialled connection for ever, and
// each gateway, contact or replica the proxy ever reached held a
// descriptor until the far end hung up.
func TestDialledIdleConnectionIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	cfg := idleConfig(t, false)
	cfg.GatewayGroups = []GatewayGroup{{Name: "pstn", Gateways: []Gateway{{Name: "a", Addr: ln.Addr().String(), Transport: "tcp"}}}}
	cfg.Dialplan = []DialplanRule{{Name: "e164", Regex: `^\+?[0-9]+$`, Group: "pstn"}}
	p := startProxy(t, cfg)

	caller := newPeer(t, "caller")
	answered := make(chan int, 1)
	go func() {
		req := caller.request(sip.INVITE, "sip:+15551234@localhost", "alice")
		req.SetDestination(p.Addr("udp"))
		res, err := caller.cli.Do(t.Context(), req)
		if err != nil {
			answered <- 0
			return
		}
		answered <- res.StatusCode
	}()
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("the proxy dialled no connection to the gateway: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	gw := &streamPhone{t: t, conn: conn, r: bufio.NewReader(conn)}
	inv, ok := gw.next().(*sip.Request)
	if !ok || !inv.IsInvite() {
		t.Fatalf("the gateway got %v, want the INVITE", inv)
	}
	busy := sip.NewResponseFromRequest(inv, sip.StatusBusyHere, "Busy Here", nil)
	busy.To().Params.Add("tag", "gw1")
	gw.send(busy.String())
	if code := <-answered; code != sip.StatusBusyHere {
		t.Fatalf("caller got %d, want the gateway's 486", code)
	}
	// The proxy ACKs the 486 over the connection; then it stays quiet.
	if ack, ok := gw.next().(*sip.Request); !ok || !strings.EqualFold(string(ack.Method), "ACK") {
		t.Fatalf("the gateway got %v, want the ACK", ack)
	}
	waitClosed(t, conn, testIdleTimeout+2*time.Second)
}
