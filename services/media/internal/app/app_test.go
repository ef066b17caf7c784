package app

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/dsp"
)

const heartbeat = 100 * time.Millisecond

// startMediaNode runs a whole media node (bus client, engine, control
// layer, HTTP) against the bus at url, the way main does.
func startMediaNode(t *testing.T, url, id string, portMin int) {
	t.Helper()
	cfg := Defaults()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Bus.URL = url
	cfg.Node.ID = id
	cfg.Node.CapacityUnits = 50
	cfg.Node.HeartbeatInterval = heartbeat
	cfg.RTP.PortMin, cfg.RTP.PortMax = portMin, portMin+99
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	drain, cancel := context.WithCancel(context.Background())
	hard := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- Run(drain, hard, cfg, zerolog.Nop(), prometheus.NewRegistry()) }()
	t.Cleanup(func() {
		cancel()
		close(hard)
		if err := <-done; err != nil {
			t.Errorf("media node: %v", err)
		}
	})
}

// phone is one RTP endpoint on loopback.
type phone struct {
	conn *net.UDPConn
	seq  uint16
	ts   uint32
}

func newPhone(t *testing.T) *phone {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &phone{conn: c}
}

func (p *phone) port() int { return p.conn.LocalAddr().(*net.UDPAddr).Port }

func (p *phone) sdp(formats string, attrs ...string) []byte {
	lines := append([]string{
		"v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
		fmt.Sprintf("m=audio %d RTP/AVP %s", p.port(), formats),
	}, attrs...)
	lines = append(lines, "a=sendrecv")
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// mediaTarget reads the connection address and port from an SDP body.
func mediaTarget(t *testing.T, sdp []byte) *net.UDPAddr {
	t.Helper()
	var ip string
	var port int
	for _, line := range strings.Split(string(sdp), "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "c=IN IP4 "); ok {
			ip = rest
		}
		if rest, ok := strings.CutPrefix(line, "m=audio "); ok {
			fmt.Sscanf(rest, "%d", &port)
		}
	}
	if ip == "" || port == 0 {
		t.Fatalf("no media address in sdp:\n%s", sdp)
	}
	return &net.UDPAddr{IP: net.ParseIP(ip), Port: port}
}

func TestRunLeavesNoGoroutineBehind(t *testing.T) {
	// Zero bus config: the node starts its own embedded server, so
	// everything it starts, the bus included, must be gone after Run.
	before := goleak.IgnoreCurrent()
	cfg := Defaults()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Bus.Embedded = bus.EmbeddedConfig{Port: freePort(t), StoreDir: t.TempDir()}
	cfg.Node.ID = "leakcheck"
	cfg.Node.HeartbeatInterval = heartbeat
	cfg.RTP.PortMin, cfg.RTP.PortMax = 23200, 23299
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	drain, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(drain, make(chan struct{}), cfg, zerolog.Nop(), prometheus.NewRegistry()) }()
	time.Sleep(3 * heartbeat)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, before)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestToneThroughTranscodingNodeOverTheBus(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	startMediaNode(t, srv.URL(), "media-e2e", 23000)

	client, err := bus.Connect(context.Background(), bus.Config{URL: srv.URL()}, "proxy", zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	kv, err := fleet.OpenBucket(context.Background(), client, heartbeat, 0)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	view := fleet.NewView(client, kv, heartbeat, zerolog.Nop(), reg)
	ctx, stop := context.WithCancel(context.Background())
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); _ = view.Run(ctx) }()
	t.Cleanup(func() { stop(); <-viewDone })
	claimer := fleet.NewClaimer(client, view, fleet.ClaimConfig{}, zerolog.Nop(), reg)
	deadline := time.Now().Add(5 * time.Second)
	for !view.Has("media-e2e") {
		if time.Now().After(deadline) {
			t.Fatal("node never joined the fleet view")
		}
		time.Sleep(10 * time.Millisecond)
	}

	caller, callee := newPhone(t), newPhone(t)
	offer, err := claimer.Offer(context.Background(), &callgridv1.OfferRequest{CallId: "e2e-1", Sdp: caller.sdp("0", "a=rtpmap:0 PCMU/8000")})
	if err != nil {
		t.Fatal(err)
	}
	answer, err := claimer.Answer(context.Background(), offer.GetNodeId(), &callgridv1.AnswerRequest{
		SessionId: offer.GetSessionId(),
		Sdp:       callee.sdp("111", "a=rtpmap:111 opus/48000/2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !answer.GetTranscoding() {
		t.Fatal("PCMU caller and Opus callee should transcode")
	}
	nodeForA := mediaTarget(t, answer.GetSdp())

	// 1 s of a 1 kHz tone as PCMU from the caller.
	enc, err := codec.NewEncoder(codec.PCMU, 8000, codec.OpusOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tone := dsp.NewTone(1000, 8000, dsp.AmplitudeFromDBFS(-10))
	pcm := make([]int16, 160)
	payload := make([]byte, 160)
	go func() {
		for i := range 50 {
			tone.Fill(pcm)
			n, _ := enc.Encode(pcm, payload)
			pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 0x1234}, Payload: payload[:n]}
			raw, _ := pkt.Marshal()
			_, _ = caller.conn.WriteToUDP(raw, nodeForA)
			time.Sleep(20 * time.Millisecond)
		}
	}()

	dec, err := codec.NewDecoder(codec.Opus, 48000)
	if err != nil {
		t.Fatal(err)
	}
	var heard []int16
	buf := make([]byte, 1500)
	out := make([]int16, 960*6)
	_ = callee.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	for len(heard) < 48000/2 {
		n, _, err := callee.conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("callee heard %d samples before: %v", len(heard), err)
		}
		var pkt rtp.Packet
		if pkt.Unmarshal(buf[:n]) != nil || pkt.PayloadType != 111 {
			continue
		}
		m, err := dec.Decode(pkt.Payload, out)
		if err != nil {
			t.Fatal(err)
		}
		heard = append(heard, out[:m]...)
	}
	block := heard[len(heard)-9600:] // the last 200 ms, past codec start-up
	freq, _ := dsp.DominantFrequency(block, 48000, []float64{300, 500, 800, 1000, 1200, 2000, 3000})
	if freq != 1000 {
		t.Fatalf("callee heard a %v Hz tone, want 1000", freq)
	}
	if snr := dsp.ToneSNR(block, 1000, 48000); snr < 15 {
		t.Fatalf("tone SNR %.1f dB through PCMU→Opus, want ≥ 15", snr)
	}

	del, err := claimer.Delete(context.Background(), offer.GetNodeId(), &callgridv1.DeleteRequest{SessionId: offer.GetSessionId(), Cause: "bye"})
	if err != nil {
		t.Fatal(err)
	}
	if del.GetQuality().GetLegA().GetPacketsReceived() == 0 {
		t.Fatalf("call-ended quality shows no packets from the caller: %v", del.GetQuality())
	}
	// The fleet sees the node empty again: no units, no ports.
	deadline = time.Now().Add(3 * time.Second)
	for {
		nodes := view.Nodes()
		if len(nodes) == 1 && nodes[0].GetCapacityUsed() == 0 && nodes[0].GetPortsUsed() == 0 && nodes[0].GetPortsTotal() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node status after delete: %v", nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
