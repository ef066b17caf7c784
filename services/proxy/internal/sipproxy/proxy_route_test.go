package sipproxy

import (
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// rawUDP is a socket a test speaks raw SIP through.
func rawUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// readRequest waits for a request on conn.
func readRequest(t *testing.T, conn *net.UDPConn, what string) *sip.Request {
	t.Helper()
	buf := make([]byte, 65535)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if req, ok := msg.(*sip.Request); ok {
			return req
		}
		t.Fatalf("%s: got %q", what, firstLine(buf[:n]))
	}
}

func inDialogBye(from *net.UDPConn, ruri string, routes ...string) string {
	msg := "BYE " + ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + from.LocalAddr().String() + ";branch=z9hG4bK-" + sip.GenerateTagN(10) + "\r\n"
	for _, r := range routes {
		msg += "Route: " + r + "\r\n"
	}
	return msg + "From: <sip:alice@localhost>;tag=a1\r\n" +
		"To: <sip:callee@localhost>;tag=b1\r\n" +
		"Call-ID: strict-" + sip.GenerateTagN(8) + "@test\r\n" +
		"CSeq: 2 BYE\r\n" +
		"Max-Forwards: 70\r\n" +
		"Content-Length: 0\r\n\r\n"
}

func send(t *testing.T, from *net.UDPConn, to, msg string) {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := from.WriteToUDP([]byte(msg), addr); err != nil {
		t.Fatal(err)
	}
}

func routeURIs(req *sip.Request) []string {
	var out []string
	for _, h := range req.GetHeaders("Route") {
		out = append(out, h.(*sip.RouteHeader).Address.String())
	}
	return out
}

// A strict router (RFC 2543) before the proxy sends an in-dialog request
// with our Record-Route entry as its Request-URI and the remote target as
// the last Route: the proxy puts the target back (RFC 3261 16.4) and
// forwards the request to it.
func TestStrictRouterBeforeUs(t *testing.T) {
	p := startProxy(t, trustedConfig())
	caller, callee := rawUDP(t), rawUDP(t)
	target := "sip:callee@" + callee.LocalAddr().String()
	ours := "sip:" + p.Addr("udp") + ";transport=udp;lr"
	send(t, caller, p.Addr("udp"), inDialogBye(caller, ours, "<"+target+">"))
	got := readRequest(t, callee, "BYE at the callee")
	if got.Recipient.String() != target {
		t.Errorf("Request-URI %s, want the remote target %s", got.Recipient.String(), target)
	}
	if r := routeURIs(got); len(r) != 0 {
		t.Errorf("Route %v left on the request, want none", r)
	}
}

// A strict router after the proxy (its Route entry lacks lr) gets the
// request as RFC 3261 16.6 step 6 says: its own URI as the Request-URI, the
// remote target as the last Route.
func TestStrictRouterAfterUs(t *testing.T) {
	p := startProxy(t, trustedConfig())
	caller, strict := rawUDP(t), rawUDP(t)
	target := "sip:callee@192.0.2.7:5062"
	router := "sip:" + strict.LocalAddr().String()
	third := "sip:192.0.2.8;lr"
	send(t, caller, p.Addr("udp"), inDialogBye(caller, target,
		"<sip:"+p.Addr("udp")+";transport=udp;lr>", "<"+router+">", "<"+third+">"))
	got := readRequest(t, strict, "BYE at the strict router")
	if got.Recipient.String() != router {
		t.Errorf("Request-URI %s, want the strict router's %s", got.Recipient.String(), router)
	}
	want := []string{third, target}
	if r := routeURIs(got); len(r) != len(want) || r[0] != want[0] || r[1] != want[1] {
		t.Errorf("Route %v, want %v", r, want)
	}
	if top := got.Route(); top == nil || top.Address.String() != third {
		t.Errorf("top Route %v, want %s", top, third)
	}
}

// The request the proxy goes on with after strictNextHop names the new top
// entry as its Route, whatever order sipgo keeps its references in.
func TestStrictNextHopKeepsTopRoute(t *testing.T) {
	msg, err := sip.ParseMessage([]byte("BYE sip:callee@192.0.2.7 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1\r\n" +
		"Route: <sip:192.0.2.2>\r\nRoute: <sip:192.0.2.3;lr>\r\nRoute: <sip:192.0.2.4;lr>\r\n" +
		"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*sip.Request)
	strictNextHop(req)
	if req.Recipient.String() != "sip:192.0.2.2" {
		t.Errorf("Request-URI %s", req.Recipient.String())
	}
	if r := req.Route(); r == nil || r.Address.String() != "sip:192.0.2.3;lr" {
		t.Errorf("top Route %v, want sip:192.0.2.3;lr", r)
	}
	want := []string{"sip:192.0.2.3;lr", "sip:192.0.2.4;lr", "sip:callee@192.0.2.7"}
	if r := routeURIs(req); len(r) != 3 || r[0] != want[0] || r[1] != want[1] || r[2] != want[2] {
		t.Errorf("Route %v, want %v", r, want)
	}
}
