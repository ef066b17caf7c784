package sipproxy

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// The messages of one benchmark call (bench/proxy): sipp's INVITE to the
// proxy, and the callee's 200 carrying the proxy's Via and Record-Route.
const (
	benchInvite = "INVITE sip:15550001@127.0.0.1:5060 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:15062;branch=z9hG4bK-4242-1-0\r\n" +
		"From: sipp <sip:sipp@127.0.0.1:15062>;tag=4242SIPpTag001\r\n" +
		"To: <sip:15550001@127.0.0.1:5060>\r\n" +
		"Call-ID: 1-4242@127.0.0.1\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:sipp@127.0.0.1:15062>\r\n" +
		"Max-Forwards: 70\r\n" +
		"Subject: Performance Test\r\n" +
		"Content-Type: application/sdp\r\n" +
		"Content-Length: 129\r\n\r\n" +
		"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	benchOK = "SIP/2.0 200 OK\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcg0123456789abcdef.abcdefabcdef;rport=5060\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:15062;branch=z9hG4bK-4242-1-0;received=127.0.0.1;rport=15062\r\n" +
		"Record-Route: <sip:127.0.0.1:5060;transport=udp;lr>\r\n" +
		"From: sipp <sip:sipp@127.0.0.1:15062>;tag=4242SIPpTag001\r\n" +
		"To: <sip:15550001@127.0.0.1:5060>;tag=4243SIPpTag011\r\n" +
		"Call-ID: 1-4242@127.0.0.1\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:127.0.0.1:15063;transport=UDP>\r\n" +
		"Content-Type: application/sdp\r\n" +
		"Content-Length: 129\r\n\r\n" +
		"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

func benchServer(b testing.TB) *Server {
	b.Helper()
	s, err := New(testConfig(), testLogger(), prometheusRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.closeListeners()
		_ = s.ua.Close()
	})
	return s
}

func parseBench[T sip.Message](b *testing.B, raw string) T {
	b.Helper()
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		b.Fatal(err)
	}
	msg.SetTransport("UDP")
	msg.SetSource("127.0.0.1:15062")
	return msg.(T)
}

// BenchmarkForwardInvite is what the proxy builds for one INVITE branch:
// the forwarded base and the branch with our Via and Record-Route.
func BenchmarkForwardInvite(b *testing.B) {
	s := benchServer(b)
	req := parseBench[*sip.Request](b, benchInvite)
	t := target{uri: sip.Uri{Scheme: "sip", User: "15550001", Host: "127.0.0.1", Port: 15063}, dest: "127.0.0.1:15063", transport: "UDP"}
	b.ReportAllocs()
	for b.Loop() {
		c := &call{req: req, serverLog: &s.log}
		c.loop = loopHash(req)
		base, _ := s.prepareForward(c)
		out := forwardCopy(base)
		out.Recipient = t.uri
		out.PrependHeader(s.ourVia(t.transport, s.newBranch(c.loop, callIDOf(req))))
		s.addRecordRoute(out, req.Transport(), t.transport, c.recordRouteParams())
		s.address(out, t)
	}
}

// BenchmarkUpstreamResponse relays a branch's 200 towards the caller.
func BenchmarkUpstreamResponse(b *testing.B) {
	s := benchServer(b)
	req := parseBench[*sip.Request](b, benchInvite)
	res := parseBench[*sip.Response](b, benchOK)
	res.SetSource("127.0.0.1:15063")
	b.ReportAllocs()
	for b.Loop() {
		up := s.upstreamResponse(req, res)
		if len(up.GetHeaders("Via")) != 1 {
			b.Fatal("our Via was not removed")
		}
	}
}

// BenchmarkACKTakeCheck is what takeACK decides before forwarding an ACK
// itself: parsing, the route check and the transaction lookup.
func BenchmarkACKTakeCheck(b *testing.B) {
	s := benchServer(b)
	raw := []byte(strings.NewReplacer(
		"INVITE sip:15550001@127.0.0.1:5060", "ACK sip:127.0.0.1:15063;transport=UDP",
		"CSeq: 1 INVITE", "CSeq: 1 ACK",
		"To: <sip:15550001@127.0.0.1:5060>", "To: <sip:15550001@127.0.0.1:5060>;tag=4243SIPpTag011\r\nRoute: <sip:127.0.0.1:5060;transport=udp;lr>",
		"branch=z9hG4bK-4242-1-0", "branch=z9hG4bK-4242-1-5",
	).Replace(benchInvite))
	b.ReportAllocs()
	for b.Loop() {
		msg, err := s.parser.ParseSIP(raw)
		if err != nil {
			b.Fatal(err)
		}
		req := msg.(*sip.Request)
		key, err := sip.ServerTxKeyMake(req)
		if err != nil || !s.routedByAddress(req) {
			b.Fatal("ack would not be taken")
		}
		if _, live := s.inviteTxs.Load(key); live {
			b.Fatal("no transaction should match")
		}
	}
}

// BenchmarkTryingResponse builds the 100 every INVITE is answered with.
func BenchmarkTryingResponse(b *testing.B) {
	s := benchServer(b)
	req := parseBench[*sip.Request](b, benchInvite)
	b.ReportAllocs()
	for b.Loop() {
		s.tryingResponse(req)
	}
}

// BenchmarkJudgeAnsweredGateway is what the failure policy adds to every
// call a gateway answers.
func BenchmarkJudgeAnsweredGateway(b *testing.B) {
	s := benchServer(b)
	gw := &gatewayState{policy: newFailurePolicy(GatewayFailure{}.withDefaults())}
	c := &call{serverLog: &s.log}
	r := branchResult{answered: true}
	b.ReportAllocs()
	for b.Loop() {
		s.judgeGateway(c, gw, gw.gen.Load(), r)
	}
}

// readyConn answers every read at once: what is left to measure is the
// idle timeout's own work on a read.
type readyConn struct{ net.Conn }

func (readyConn) Read(b []byte) (int, error)         { return len(b), nil }
func (readyConn) SetReadDeadline(time.Time) error    { return nil }
func (readyConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (readyConn) Write(b []byte) (int, error)        { return len(b), nil }
func (readyConn) SetWriteDeadline(t time.Time) error { return nil }

// BenchmarkIdleConnRead is what the idle timeout adds to a stream read.
func BenchmarkIdleConnRead(b *testing.B) {
	c := newIdleConn(readyConn{}, time.Hour, func(net.Conn) {})
	buf := make([]byte, 1500)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = c.Read(buf)
	}
}

// BenchmarkRequestSize is what a branch to a UDP target that takes TCP
// pays to learn whether it is above udp_mtu; other branches skip it.
func BenchmarkRequestSize(b *testing.B) {
	s := benchServer(b)
	req := parseBench[*sip.Request](b, benchInvite)
	c := &call{req: req, serverLog: &s.log}
	c.loop = loopHash(req)
	base, _ := s.prepareForward(c)
	out := forwardCopy(base)
	out.PrependHeader(s.ourVia("UDP", s.newBranch(c.loop, callIDOf(req))))
	s.addRecordRoute(out, req.Transport(), "UDP", c.recordRouteParams())
	b.ReportAllocs()
	for b.Loop() {
		if requestSize(out) > DefaultUDPMTU {
			b.Fatal("the benchmark invite is small")
		}
	}
}

// BenchmarkNewBranch signs one branch of a forwarded request.
func BenchmarkNewBranch(b *testing.B) {
	s := benchServer(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = s.newBranch("0123456789abcdef", "1-4242@127.0.0.1")
	}
}

// BenchmarkSignedBranch checks the branch of a response no transaction
// matched.
func BenchmarkSignedBranch(b *testing.B) {
	s := benchServer(b)
	branch := s.newBranch("0123456789abcdef", "1-4242@127.0.0.1")
	b.ReportAllocs()
	for b.Loop() {
		if !s.signedBranch(branch, "1-4242@127.0.0.1") {
			b.Fatal("own branch not verified")
		}
	}
}
