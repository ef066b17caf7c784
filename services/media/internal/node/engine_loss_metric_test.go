package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/services/media/internal/engine"
	"callgrid.dev/services/media/internal/quality"
	"callgrid.dev/services/media/internal/sdpneg"
)

// The engine's media_leg_loss_ratio histogram records a leg's loss as
// quality.LossRatio does, lost over RFC 3550 expected, the figure its MOS
// rates: not over PacketsIn+Lost, which counts each source's probation
// packet as expected. A leg that lost 20 of 80 packets sent from ten
// sources in turn is recorded as 20/70, as its MOS rates it.
func TestLegLossMetricIsLostOverRFC3550Expected(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := engine.New(engine.Config{BindIP: "127.0.0.1", PortMin: 23400, PortMax: 23499, MediaTimeout: 10 * time.Second}, zerolog.Nop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, aRTCP, b, bRTCP := listen(), listen(), listen(), listen()
	sdpOf := func(c, rtcp *net.UDPConn) []byte {
		return []byte(fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtcp:%d\r\n",
			c.LocalAddr().(*net.UDPAddr).Port, rtcp.LocalAddr().(*net.UDPAddr).Port))
	}
	ctx := context.Background()
	if _, err := e.Offer(ctx, engine.OfferParams{SessionID: "s1", CallID: "c1", SDP: sdpOf(a, aRTCP)}); err != nil {
		t.Fatal(err)
	}
	answer, _, err := e.Answer(ctx, "s1", sdpOf(b, bRTCP), false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := sdpneg.Parse(answer)
	if err != nil {
		t.Fatal(err)
	}
	nodeA := d.Audio().RTP()
	payload := make([]byte, 160)
	// Ten sources in turn (a PBX switching its media source, say), each
	// sending seqs 0-7 of which 3 and 4 are lost: RFC 3550 expects 7 of
	// each (seq 0 is on probation), so 20 lost of 70 expected.
	for src := range 10 {
		for i := range 8 {
			if i == 3 || i == 4 {
				continue
			}
			seq := uint16(1000*src + i)
			raw, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(100000*src + i*160), SSRC: uint32(src + 1)}, Payload: payload}).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.WriteToUDPAddrPort(raw, netip.AddrPort(nodeA)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	buf := make([]byte, 2048)
	for {
		_ = b.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := b.Read(buf); err != nil {
			break
		}
	}
	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if q.Legs[0].Lost != 20 || q.Legs[0].PacketsIn != 60 {
		t.Fatalf("leg A lost %d, want 20 (packets in %d)", q.Legs[0].Lost, q.Legs[0].PacketsIn)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	var count uint64
	for _, mf := range families {
		if mf.GetName() == "media_leg_loss_ratio" {
			for _, m := range mf.GetMetric() {
				sum += m.GetHistogram().GetSampleSum()
				count += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if want := 20.0 / 70; count != 1 || sum < want-0.005 || sum > want+0.005 {
		t.Errorf("media_leg_loss_ratio observed %d legs, sum %.4f; want one leg at %.4f (20 lost of 70 RFC 3550 expected, the figure MOS rates; leg A packets in %d, MOS %.2f = MOS at 20/70 %.2f, not at 20/80 %.2f)",
			count, sum, want, q.Legs[0].PacketsIn, q.Legs[0].MOS,
			quality.MOS(q.Legs[0].Codec, 100*want, 0, q.Legs[0].JitterMs), quality.MOS(q.Legs[0].Codec, 25, 0, q.Legs[0].JitterMs))
	}
}
