package engine

import (
	"testing"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/quality"
)

// The loss ratio histogram observes the figure MOS is fed: lost over RFC
// 3550 expected, summed over the call's sources.
func TestLegLossRatioIsTheLossMOSRates(t *testing.T) {
	e, reg := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	sent := 0
	for i := range 50 {
		if i >= 10 && i < 20 {
			continue
		}
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 1}, pcmuPayload(1))
		sent++
	}
	receiveAll(t, b, sent)
	for i := range 50 {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(5000 + i), Timestamp: uint32(777777 + i*160), SSRC: 2}, pcmuPayload(2))
	}
	receiveAll(t, b, 50)
	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	// 49 expected of each source (the first packet of each is on probation).
	want := quality.LossRatio(10, 98)
	if mos := quality.MOS("PCMU", 100*want, 0, q.Legs[0].JitterMs); mos != q.Legs[0].MOS {
		t.Errorf("MOS %v, want %v for loss %v", q.Legs[0].MOS, mos, want)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == "media_leg_loss_ratio" {
			if got := mf.GetMetric()[0].GetHistogram().GetSampleSum(); got != want {
				t.Errorf("media_leg_loss_ratio sum %v, want %v (the MOS input)", got, want)
			}
		}
	}
}
