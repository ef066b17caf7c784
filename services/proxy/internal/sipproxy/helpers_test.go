package sipproxy

import (
	"context"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// testLogger is silent unless SIPPROXY_TEST_LOG is set: sipgo timers can log
// after a test ends, which testing.T would reject.
func testLogger() zerolog.Logger {
	if os.Getenv("SIPPROXY_TEST_LOG") != "" {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	}
	return zerolog.New(io.Discard)
}

// testConfig is a proxy on a free loopback port with short timers.
func testConfig() Config {
	return Config{
		ListenAddr:    "127.0.0.1:0",
		BranchTimeout: 800 * time.Millisecond,
		CancelWait:    2 * time.Second,
		RateLimit:     RateLimitConfig{Disabled: true},
		Probe:         ProbeConfig{Disabled: true},
	}
}

type runningProxy struct {
	*Server
	reg  *prometheus.Registry
	stop func()
}

func startProxy(t *testing.T, cfg Config, opts ...Option) *runningProxy {
	t.Helper()
	return startProxyLogged(t, cfg, testLogger(), opts...)
}

// startProxyLogged is startProxy logging to log.
func startProxyLogged(t *testing.T, cfg Config, log zerolog.Logger, opts ...Option) *runningProxy {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(cfg, log, reg, opts...)
	if err != nil {
		t.Fatalf("new proxy: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("proxy run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("proxy did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return &runningProxy{Server: s, reg: reg, stop: stop}
}

// peer is a SIP endpoint (phone or gateway) on a loopback UDP port.
type peer struct {
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	cli  *sipgo.Client
	addr string
	port int
}

func newPeer(t *testing.T, name string) *peer {
	t.Helper()
	return newPeerWith(t, name, nil)
}

// newPeerWith is newPeer with handlers that setup installs before the peer
// serves: installed after, they would race with the first request.
func newPeerWith(t *testing.T, name string, setup func(srv *sipgo.Server, port int)) *peer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(name), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientConnectionAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{ua: ua, srv: srv, cli: cli, addr: addr, port: port}
	if setup != nil {
		setup(srv, port)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ServeUDP(conn)
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-served
		_ = ua.Close()
	})
	// Requests leave from the listening socket only once sipgo has pooled it.
	waitFor(t, "peer listener", func() bool { return ua.TransportLayer().Pool("udp").Size() > 0 })
	return p
}

// request builds a request from this peer with the headers a UAC adds.
func (p *peer) request(method sip.RequestMethod, ruri, fromUser string) *sip.Request {
	var uri sip.Uri
	if err := sip.ParseUri(ruri, &uri); err != nil {
		panic(err)
	}
	req := sip.NewRequest(method, uri)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: fromUser, Host: "localhost"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: uri.User, Host: uri.Host}, Params: sip.NewParams()})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: fromUser, Host: "127.0.0.1", Port: p.port}})
	return req
}

// do sends req through proxy over UDP and returns the final response.
func (p *peer) do(t *testing.T, proxyAddr string, req *sip.Request) *sip.Response {
	t.Helper()
	req.SetDestination(proxyAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.cli.Do(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", req.Method, err)
	}
	return res
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func prometheusRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// cancelFor is the CANCEL a caller sends for invite (RFC 3261 9.1).
func cancelFor(invite *sip.Request) *sip.Request {
	req := sip.NewRequest(sip.CANCEL, invite.Recipient)
	req.AppendHeader(invite.Via().Clone())
	req.AppendHeader(sip.HeaderClone(invite.From()))
	req.AppendHeader(sip.HeaderClone(invite.To()))
	req.AppendHeader(sip.HeaderClone(invite.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: invite.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	return req
}

// inviteUntil sends invite to addr and returns its client transaction once
// the response want (a 180, say) has come back, with the channel that closes
// when the test has waited for the INVITE too long.
func inviteUntil(t *testing.T, caller *peer, addr string, invite *sip.Request, want int) (sip.ClientTransaction, <-chan struct{}) {
	t.Helper()
	invite.SetDestination(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	tx, err := caller.cli.TransactionRequest(ctx, invite)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tx.Terminate)
	for {
		select {
		case r := <-tx.Responses():
			if r.StatusCode == want {
				return tx, ctx.Done()
			}
		case <-ctx.Done():
			t.Fatalf("no %d for the invite to %s", want, addr)
		}
	}
}

// finalStatus waits for the final response of the INVITE transaction tx,
// until done (inviteUntil's) closes.
func finalStatus(t *testing.T, tx sip.ClientTransaction, done <-chan struct{}) int {
	t.Helper()
	for {
		select {
		case r := <-tx.Responses():
			if r.StatusCode >= 200 {
				return r.StatusCode
			}
		case <-done:
			t.Fatal("no final response to the invite")
		}
	}
}

// rawInvite is a raw INVITE from end to ruri, sent to the proxy.
func rawInvite(end *udpEnd, ruri, callID, branch string) string {
	return "INVITE " + ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(end.port) + ";branch=" + branch + ";rport\r\n" +
		"From: <sip:alice@localhost>;tag=caller1\r\n" +
		"To: <" + ruri + ">\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:alice@127.0.0.1:" + strconv.Itoa(end.port) + ">\r\n" +
		"Max-Forwards: 70\r\n" +
		"Content-Length: 0\r\n\r\n"
}

// respondFrom answers req from end to wherever it came from (the proxy),
// with a To tag and extra headers.
func respondFrom(t *testing.T, end *udpEnd, to string, req *sip.Request, code int, extra ...sip.Header) {
	t.Helper()
	res := sip.NewResponseFromRequest(req, code, "Test", nil)
	if !res.To().Params.Has("tag") {
		res.To().Params.Add("tag", "callee1")
	}
	for _, h := range extra {
		res.AppendHeader(h)
	}
	end.send(t, to, []byte(res.String()))
}

// isAnyFinal matches a final response to any request.
func isAnyFinal(m sip.Message) bool {
	r, ok := m.(*sip.Response)
	return ok && r.StatusCode >= 200
}
