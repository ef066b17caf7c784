package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"callgrid.dev/services/media/internal/sdpneg"
)

// Test port range: far from the Linux ephemeral range, so the endpoints'
// own sockets never take a port the engine wants.
const (
	testPortMin = 21000
	testPortMax = 21199
)

// newTestEngine starts an engine on loopback. On cleanup it closes the
// engine and checks that every port came back and no goroutine is left.
func newTestEngine(t *testing.T, mutate func(*Config), opts ...Option) (*Engine, *prometheus.Registry) {
	t.Helper()
	return newTestEngineLogging(t, mutate, zerolog.NewTestWriter(t), opts...)
}

// newTestEngineLogging is newTestEngine with the engine's warnings and
// errors written to logs.
func newTestEngineLogging(t *testing.T, mutate func(*Config), logs io.Writer, opts ...Option) (*Engine, *prometheus.Registry) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	cfg := Config{BindIP: "127.0.0.1", PortMin: testPortMin, PortMax: testPortMax, MediaTimeout: 10 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	reg := prometheus.NewRegistry()
	log := zerolog.New(logs).Level(zerolog.WarnLevel)
	e, err := New(cfg, log, reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	// A test's packets come in bursts, not paced talkspurts: a stall of
	// the test or of the loop within one must not end it.
	e.talkspurtGrace = time.Minute
	t.Cleanup(func() {
		e.Close()
		if n := e.pool.InUse(); n != 0 {
			t.Errorf("%d port pairs still in use after Close", n)
		}
	})
	return e, reg
}

// endpoint is a test phone: an RTP and an RTCP socket on loopback.
type endpoint struct {
	t    *testing.T
	rtp  *net.UDPConn
	rtcp *net.UDPConn
	buf  []byte
}

func newEndpoint(t *testing.T) *endpoint {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return &endpoint{t: t, rtp: listen(), rtcp: listen(), buf: make([]byte, 2048)}
}

func (ep *endpoint) addr() netip.AddrPort { return ep.rtp.LocalAddr().(*net.UDPAddr).AddrPort() }

// sdp describes the endpoint: media lines are "m=" format list entries and
// attribute lines, e.g. sdp("0 101", "a=rtpmap:101 telephone-event/8000").
func (ep *endpoint) sdp(formats string, attrs ...string) []byte {
	lines := []string{
		"v=0",
		"o=- 1 1 IN IP4 127.0.0.1",
		"s=-",
		"c=IN IP4 127.0.0.1",
		"t=0 0",
		fmt.Sprintf("m=audio %d RTP/AVP %s", ep.addr().Port(), formats),
		fmt.Sprintf("a=rtcp:%d", ep.rtcp.LocalAddr().(*net.UDPAddr).Port),
	}
	lines = append(lines, attrs...)
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

func (ep *endpoint) send(to netip.AddrPort, h rtp.Header, payload []byte) {
	ep.t.Helper()
	h.Version = 2
	raw, err := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
	if err != nil {
		ep.t.Fatal(err)
	}
	if _, err := ep.rtp.WriteToUDPAddrPort(raw, to); err != nil {
		ep.t.Fatal(err)
	}
}

// recv returns the next RTP packet, or false after timeout.
func (ep *endpoint) recv(timeout time.Duration) (rtp.Packet, bool) {
	ep.t.Helper()
	_ = ep.rtp.SetReadDeadline(time.Now().Add(timeout))
	n, err := ep.rtp.Read(ep.buf)
	if err != nil {
		return rtp.Packet{}, false
	}
	var p rtp.Packet
	if err := p.Unmarshal(append([]byte(nil), ep.buf[:n]...)); err != nil {
		ep.t.Fatalf("endpoint received a malformed packet: %v", err)
	}
	return p, true
}

// expectNothing asserts no RTP arrives within d.
func (ep *endpoint) expectNothing(d time.Duration) {
	ep.t.Helper()
	if p, ok := ep.recv(d); ok {
		ep.t.Fatalf("unexpected packet PT %d seq %d", p.PayloadType, p.SequenceNumber)
	}
}

// nodeAddr reads the RTP address a node SDP tells the endpoint to use.
func nodeAddr(t *testing.T, raw []byte) netip.AddrPort {
	t.Helper()
	d, err := sdpneg.Parse(raw)
	if err != nil {
		t.Fatalf("node sdp: %v\n%s", err, raw)
	}
	return d.Audio().RTP()
}

// bridge sets up a session from A's offer and B's answer and returns the
// node addresses A and B must send to, and whether the node transcodes.
func bridge(t *testing.T, e *Engine, id string, aSDP, bSDP []byte) (nodeA, nodeB netip.AddrPort, transcoding bool) {
	t.Helper()
	ctx := context.Background()
	offer, err := e.Offer(ctx, OfferParams{SessionID: id, CallID: "call-" + id, SDP: aSDP})
	if err != nil {
		t.Fatalf("offer: %v", err)
	}
	answer, transcoding, err := e.Answer(ctx, id, bSDP, false)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	return nodeAddr(t, answer), nodeAddr(t, offer), transcoding
}

// pcmuPayload is a 20 ms PCMU payload of one repeated byte.
func pcmuPayload(fill byte) []byte {
	p := make([]byte, 160)
	for i := range p {
		p[i] = fill
	}
	return p
}

// receiveAll reads n RTP packets at ep or fails: once they are relayed, the
// node has counted them.
func receiveAll(t *testing.T, ep *endpoint, n int) {
	t.Helper()
	for i := range n {
		if _, ok := ep.recv(2 * time.Second); !ok {
			t.Fatalf("packet %d of %d not relayed", i+1, n)
		}
	}
}
