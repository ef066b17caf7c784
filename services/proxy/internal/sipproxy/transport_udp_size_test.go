package sipproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rawPeer is a SIP endpoint on a plain UDP socket, with a TCP listener on
// the same port when asked, that writes its messages itself. sipgo's UDP
// size limit is process-wide: peers built on sipgo would share the
// proxy's, and could not send what this test is about.
type rawPeer struct {
	conn *net.UDPConn
	port int
	addr string
	msgs chan rawMsg
	// tcpHeld, without a TCP listener, is a TCP socket bound to the port
	// and not listening: a connection to the port is refused, and no
	// other test's listener can take the port number meanwhile.
	tcpHeld int
}

// rawMsg is a message a rawPeer received and how to answer it.
type rawMsg struct {
	msg       sip.Message
	transport string
	// reply sends m back the way this message came.
	reply func(m sip.Message) error
}

// bindPeerPorts binds a UDP socket on 127.0.0.1 and a TCP socket on the
// same port number: a listener when withTCP, else a socket bound only (see
// rawPeer.tcpHeld). A port free for UDP may be taken for TCP by another
// test, so a few are tried.
func bindPeerPorts(t *testing.T, withTCP bool) (conn *net.UDPConn, ln net.Listener, held int) {
	t.Helper()
	for range 20 {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if withTCP {
			if ln, err := net.Listen("tcp", conn.LocalAddr().String()); err == nil {
				return conn, ln, -1
			}
		} else if fd, err := holdTCPPort(conn.LocalAddr().(*net.UDPAddr).Port); err == nil {
			return conn, nil, fd
		}
		_ = conn.Close()
	}
	t.Fatal("no port free for both udp and tcp")
	return nil, nil, -1
}

// holdTCPPort binds a TCP socket to 127.0.0.1:port without listening, and
// without SO_REUSEADDR, so that nobody else can bind the port.
func holdTCPPort(port int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

func newRawPeer(t *testing.T, withTCP bool) *rawPeer {
	t.Helper()
	conn, ln, held := bindPeerPorts(t, withTCP)
	p := &rawPeer{conn: conn, port: conn.LocalAddr().(*net.UDPAddr).Port, msgs: make(chan rawMsg, 64), tcpHeld: held}
	p.addr = conn.LocalAddr().String()
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1<<16)
		for {
			n, src, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			p.deliver(rawMsg{msg: msg, transport: "UDP", reply: func(m sip.Message) error {
				_, err := conn.WriteToUDP([]byte(m.String()), src)
				return err
			}})
		}
	})
	if ln != nil {
		var connsMu sync.Mutex
		var conns []net.Conn
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					connsMu.Lock()
					for _, c := range conns {
						_ = c.Close()
					}
					connsMu.Unlock()
					return
				}
				connsMu.Lock()
				conns = append(conns, c)
				connsMu.Unlock()
				wg.Go(func() { p.readStream(c) })
			}
		})
	}
	t.Cleanup(func() {
		_ = conn.Close()
		if ln != nil {
			_ = ln.Close()
		}
		if held >= 0 {
			_ = syscall.Close(held)
		}
		wg.Wait()
	})
	return p
}

func (p *rawPeer) deliver(m rawMsg) {
	select {
	case p.msgs <- m:
	default: // a retransmission nobody waits for
	}
}

func (p *rawPeer) readStream(c net.Conn) {
	parser := sip.NewParser().NewSIPStream()
	defer parser.Close()
	var writeMu sync.Mutex
	reply := func(m sip.Message) error {
		writeMu.Lock()
		defer writeMu.Unlock()
		_, err := io.WriteString(c, m.String())
		return err
	}
	r := bufio.NewReader(c)
	buf := make([]byte, 1<<16)
	for {
		n, err := r.Read(buf)
		if err != nil {
			return
		}
		err = parser.ParseSIPStream(buf[:n], func(msg sip.Message) {
			p.deliver(rawMsg{msg: msg, transport: "TCP", reply: reply})
		})
		if err != nil && !errors.Is(err, sip.ErrParseSipPartial) {
			return
		}
	}
}

func (p *rawPeer) send(t *testing.T, to string, m sip.Message) {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.conn.WriteToUDP([]byte(m.String()), addr); err != nil {
		t.Fatalf("send %d bytes: %v", len(m.String()), err)
	}
}

// next returns the first message received that match accepts.
func (p *rawPeer) next(t *testing.T, what string, match func(sip.Message) bool) rawMsg {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-p.msgs:
			if match(m.msg) {
				return m
			}
		case <-deadline:
			t.Fatalf("%s not received", what)
			return rawMsg{}
		}
	}
}

func isRequest(method sip.RequestMethod) func(sip.Message) bool {
	return func(m sip.Message) bool {
		req, ok := m.(*sip.Request)
		return ok && req.Method == method
	}
}

func isFinal(method sip.RequestMethod) func(sip.Message) bool {
	return func(m sip.Message) bool {
		res, ok := m.(*sip.Response)
		return ok && res.StatusCode >= 200 && res.CSeq().MethodName == method
	}
}

// request builds a request from this peer with everything a UAC puts in.
func (p *rawPeer) request(method sip.RequestMethod, ruri, fromUser, callID string, seq uint32) *sip.Request {
	var uri sip.Uri
	if err := sip.ParseUri(ruri, &uri); err != nil {
		panic(err)
	}
	req := sip.NewRequest(method, uri)
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: p.port,
		Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}, {K: "rport", V: ""}}}
	req.AppendHeader(via)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: fromUser, Host: "localhost"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: uri.User, Host: uri.Host}, Params: sip.NewParams()})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: fromUser, Host: "127.0.0.1", Port: p.port}})
	return req
}

// register binds contact to bob from this peer's socket, with digest.
func (p *rawPeer) register(t *testing.T, proxyAddr, contact string) {
	t.Helper()
	callID := "reg-" + strconv.Itoa(p.port)
	build := func(seq uint32) *sip.Request {
		req := p.request(sip.REGISTER, "sip:localhost", "bob", callID, seq)
		req.To().Address.User = "bob"
		var uri sip.Uri
		if err := sip.ParseUri(contact, &uri); err != nil {
			t.Fatal(err)
		}
		req.ReplaceHeader(&sip.ContactHeader{Address: uri})
		exp := sip.ExpiresHeader(600)
		req.AppendHeader(&exp)
		req.SetBody(nil)
		return req
	}
	first := build(1)
	p.send(t, proxyAddr, first)
	res := p.next(t, "register challenge", isFinal(sip.REGISTER)).msg.(*sip.Response)
	h := res.GetHeader("WWW-Authenticate")
	if res.StatusCode != sip.StatusUnauthorized || h == nil {
		t.Fatalf("register: %d, want a challenge", res.StatusCode)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		t.Fatal(err)
	}
	second := build(2)
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: second.Recipient.Addr(), Username: "bob", Password: testPassword, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	second.AppendHeader(sip.NewHeader("Authorization", cred.String()))
	p.send(t, proxyAddr, second)
	if res := p.next(t, "register answer", isFinal(sip.REGISTER)).msg.(*sip.Response); res.StatusCode != sip.StatusOK {
		t.Fatalf("register: %d", res.StatusCode)
	}
}

// largeSDP is an offer or answer of at least size bytes: video, many
// codecs and ICE candidates, as WebRTC gateways and video phones send.
func largeSDP(size int, port int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=- 4242 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n")
	fmt.Fprintf(&b, "m=audio %d RTP/AVP 0 8 9 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n", port)
	fmt.Fprintf(&b, "m=video %d RTP/AVP 96 97 98\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n", port+2)
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "a=candidate:%d 1 udp %d 198.51.100.%d %d typ host generation 0\r\n", i, 2130706431-i, i%250+1, 40000+i)
	}
	return []byte(b.String())
}

// TestLargeMessagesOverUDP sends an INVITE and a 200 OK of about 3 KB, the
// size of a video or WebRTC offer, between callers and callees on UDP. RFC
// 3261 18.1.1 wants a request above 1300 bytes on TCP where the next hop
// takes it, as Kamailio's udp_mtu_try_proto does; every other message
// still has to arrive, over UDP, fragmented by IP.
func TestLargeMessagesOverUDP(t *testing.T) {
	const large, small = 3000, 200
	tests := []struct {
		name string
		// callee is a registered phone with this Contact ("%d" is its
		// port), or when empty a gateway with gatewayTransport.
		contact          string
		gatewayTransport string
		calleeTCP        bool
		configure        func(*Config)
		invite, answer   int // SDP sizes
		wantOver         string
		// wantTried is how a request above udp_mtu went when TCP was
		// tried: "tcp", or "udp" after no connection could be made.
		wantTried string
	}{
		{name: "registered phone, large invite and answer", contact: "sip:bob@127.0.0.1:%d", calleeTCP: true, invite: large, answer: large, wantOver: "UDP"},
		{name: "registered phone, large answer", contact: "sip:bob@127.0.0.1:%d", invite: small, answer: large, wantOver: "UDP"},
		{name: "registered phone saying tcp", contact: "sip:bob@127.0.0.1:%d;transport=tcp", calleeTCP: true, invite: large, answer: large, wantOver: "TCP", wantTried: "tcp"},
		{name: "phone behind nat saying tcp", contact: "sip:bob@192.0.2.10:%d;transport=tcp", calleeTCP: true, invite: large, answer: large, wantOver: "UDP"},
		{name: "gateway on udp", gatewayTransport: "udp", calleeTCP: true, invite: large, answer: large, wantOver: "UDP"},
		{name: "gateway taking tcp", calleeTCP: true, invite: large, answer: large, wantOver: "TCP", wantTried: "tcp"},
		{name: "gateway refusing tcp", invite: large, answer: large, wantOver: "UDP", wantTried: "udp"},
		{name: "gateway taking tcp, small invite", calleeTCP: true, invite: small, answer: large, wantOver: "UDP"},
		{name: "gateway taking tcp, try proto udp", calleeTCP: true, invite: large, answer: large, wantOver: "UDP",
			configure: func(c *Config) { c.UDPMTUTryProto = "udp" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			callee := newRawPeer(t, tc.calleeTCP)
			cfg := trustedConfig()
			ruri := "sip:bob@localhost"
			if tc.contact == "" {
				cfg.GatewayGroups = []GatewayGroup{{Name: "trunk", Gateways: []Gateway{{Addr: callee.addr, Transport: tc.gatewayTransport}}}}
				cfg.Dialplan = []DialplanRule{{Name: "out", Prefix: "9", Group: "trunk"}}
				ruri = "sip:900@localhost"
			}
			if tc.configure != nil {
				tc.configure(&cfg)
			}
			p := startProxy(t, cfg)
			if tc.contact != "" {
				callee.register(t, p.Addr("udp"), fmt.Sprintf(tc.contact, callee.port))
			}

			caller := newRawPeer(t, false)
			invite := caller.request(sip.INVITE, ruri, "alice", "large-"+strconv.Itoa(caller.port), 1)
			invite.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			offer := largeSDP(tc.invite, 30000)
			invite.SetBody(offer)
			caller.send(t, p.Addr("udp"), invite)

			got := callee.next(t, "invite at the callee", isRequest(sip.INVITE))
			inv := got.msg.(*sip.Request)
			if got.transport != tc.wantOver {
				t.Fatalf("a %d-byte invite came over %s, want %s", len(inv.String()), got.transport, tc.wantOver)
			}
			if via := inv.Via(); !strings.EqualFold(via.Transport, tc.wantOver) {
				t.Errorf("top via %s, want it to name %s", via.Value(), tc.wantOver)
			}
			if string(inv.Body()) != string(offer) {
				t.Fatalf("offer of %d bytes arrived as %d", len(offer), len(inv.Body()))
			}

			answer := largeSDP(tc.answer, 32000)
			ok := sip.NewResponseFromRequest(inv, sip.StatusOK, "OK", answer)
			ok.To().Params.Add("tag", "callee")
			ok.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "127.0.0.1", Port: callee.port}})
			ok.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			if err := got.reply(ok); err != nil {
				t.Fatal(err)
			}
			res := caller.next(t, "200 at the caller", isFinal(sip.INVITE)).msg.(*sip.Response)
			if res.StatusCode != sip.StatusOK {
				t.Fatalf("caller got %d, want 200", res.StatusCode)
			}
			if string(res.Body()) != string(answer) {
				t.Fatalf("answer of %d bytes arrived as %d", len(answer), len(res.Body()))
			}
			for _, over := range []string{"tcp", "udp"} {
				want := 0.0
				if over == tc.wantTried {
					want = 1
				}
				if got := testutil.ToFloat64(p.m.udpMTUExceeded.WithLabelValues(over)); got != want {
					t.Errorf("udp_mtu_exceeded{sent_over=%s} %v, want %v", over, got, want)
				}
			}
		})
	}
}

// TestCutDatagramIsNotParsed: a datagram larger than the read buffer is
// cut to it by the kernel with no error, and a request without
// Content-Length (allowed over UDP) would then be handled short. It must
// be dropped as too large, never parsed.
func TestCutDatagramIsNotParsed(t *testing.T) {
	cfg := trustedConfig()
	// Above sipgo's default 32 KiB read buffer, which TestMain keeps.
	cfg.MaxMessageSize = 40000
	p := startProxy(t, cfg)
	sender := newRawPeer(t, false)

	cut := sender.request(sip.OPTIONS, "sip:"+p.Addr("udp"), "alice", "cut", 1)
	cut.SetBody([]byte(strings.Repeat("x", 50000)))
	cut.RemoveHeader("Content-Length")
	sender.send(t, p.Addr("udp"), cut)
	waitFor(t, "the cut datagram dropped as too large", func() bool {
		return testutil.ToFloat64(p.m.dropped.WithLabelValues("too_large")) == 1
	})

	whole := sender.request(sip.OPTIONS, "sip:"+p.Addr("udp"), "alice", "whole", 1)
	sender.send(t, p.Addr("udp"), whole)
	res := sender.next(t, "answer to an options", isFinal(sip.OPTIONS)).msg.(*sip.Response)
	if id := res.CallID().Value(); id != "whole" {
		t.Fatalf("answered the %s options", id)
	}
}

// requestSize must be what sipgo writes, without writing it.
func TestRequestSize(t *testing.T) {
	p := &rawPeer{port: 5062}
	tests := []struct {
		name string
		req  func() *sip.Request
	}{
		{name: "no body", req: func() *sip.Request { return p.request(sip.OPTIONS, "sip:127.0.0.1:5060", "alice", "a", 1) }},
		{name: "sdp body", req: func() *sip.Request {
			r := p.request(sip.INVITE, "sip:bob@localhost;transport=udp", "alice", "b", 1)
			r.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			r.SetBody(largeSDP(3000, 30000))
			return r
		}},
		{name: "routes and record-routes", req: func() *sip.Request {
			r := p.request(sip.INVITE, "sip:bob@localhost", "alice", "c", 1)
			r.PrependHeader(&sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: 5060, UriParams: sip.HeaderParams{{K: "lr", V: ""}}}})
			r.AppendHeader(&sip.RouteHeader{Address: sip.Uri{Scheme: "sip", Host: "192.0.2.1", UriParams: sip.HeaderParams{{K: "lr", V: ""}}}})
			r.SetBody([]byte("v=0\r\n"))
			return r
		}},
		{name: "vias of every form", req: func() *sip.Request {
			r := p.request(sip.MESSAGE, "sip:bob@[2001:db8::1]:5070", "alice", "d", 1)
			for _, v := range []*sip.ViaHeader{
				{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "TCP", Host: "2001:db8::7", Port: 5060, Params: sip.HeaderParams{{K: "branch", V: "z9hG4bK-1"}}},
				{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "TLS", Host: "[2001:db8::8]", Params: sip.HeaderParams{{K: "branch", V: "z9hG4bK-2"}, {K: "rport", V: ""}}},
				{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "::ffff:192.0.2.1", Port: 65535},
				{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "proxy.example.com", Port: 7, Params: sip.HeaderParams{{K: "received", V: "192.0.2.9"}, {K: "x", V: "a b"}}},
			} {
				r.PrependHeader(v)
			}
			return r
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req()
			if got, want := requestSize(req), len(req.String()); got != want {
				t.Fatalf("requestSize %d, sipgo writes %d bytes", got, want)
			}
		})
	}
}

func TestUDPLimits(t *testing.T) {
	tests := []struct {
		name           string
		cfg            Config
		wantMTUSize    int
		wantReadBuffer uint16
	}{
		{name: "defaults", cfg: Config{}, wantMTUSize: 65507 + 200, wantReadBuffer: 32768},
		{name: "lower send limit", cfg: Config{UDPMaxMessageSize: 1500}, wantMTUSize: 1700, wantReadBuffer: 32768},
		{name: "messages above the default buffer", cfg: Config{MaxMessageSize: 40000}, wantMTUSize: 65707, wantReadBuffer: 40001},
		{name: "largest messages", cfg: Config{MaxMessageSize: 65535}, wantMTUSize: 65707, wantReadBuffer: 65535},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mtu, buf := udpLimits(tc.cfg)
			if mtu != tc.wantMTUSize || buf != tc.wantReadBuffer {
				t.Fatalf("sip.UDPMTUSize %d, read buffer %d; want %d, %d", mtu, buf, tc.wantMTUSize, tc.wantReadBuffer)
			}
		})
	}
}

// A CANCEL goes where its INVITE went (RFC 3261 9.1): over TCP when the
// INVITE was too large for UDP and went over TCP instead.
func TestCancelFollowsALargeInviteOverTCP(t *testing.T) {
	callee := newRawPeer(t, true)
	cfg := trustedConfig()
	cfg.GatewayGroups = []GatewayGroup{{Name: "trunk", Gateways: []Gateway{{Addr: callee.addr}}}}
	cfg.Dialplan = []DialplanRule{{Name: "out", Prefix: "9", Group: "trunk"}}
	p := startProxy(t, cfg)
	caller := newRawPeer(t, false)
	invite := caller.request(sip.INVITE, "sip:900@localhost", "alice", "cancel-large", 1)
	invite.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	invite.SetBody(largeSDP(3000, 30000))
	caller.send(t, p.Addr("udp"), invite)

	got := callee.next(t, "invite at the callee", isRequest(sip.INVITE))
	if got.transport != "TCP" {
		t.Fatalf("invite over %s, want TCP", got.transport)
	}
	ringing := sip.NewResponseFromRequest(got.msg.(*sip.Request), sip.StatusRinging, "Ringing", nil)
	ringing.To().Params.Add("tag", "callee")
	if err := got.reply(ringing); err != nil {
		t.Fatal(err)
	}
	caller.next(t, "180 at the caller", func(m sip.Message) bool {
		res, ok := m.(*sip.Response)
		return ok && res.StatusCode == sip.StatusRinging
	})

	cancel := cancelFor(invite)
	caller.send(t, p.Addr("udp"), cancel)
	if got := callee.next(t, "cancel at the callee", isRequest(sip.CANCEL)); got.transport != "TCP" {
		t.Fatalf("cancel over %s, want TCP with its invite", got.transport)
	}
}
