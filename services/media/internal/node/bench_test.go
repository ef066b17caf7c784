package node

import (
	"context"
	"testing"
	"time"

	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// latencyRecorder keeps a microsecond histogram without allocating per
// sample, so the benchmark's allocation figure is the claim path's own.
type latencyRecorder struct {
	buckets [20000]uint32 // 1 µs each; the last one holds everything slower
	n       int
}

func (r *latencyRecorder) add(d time.Duration) {
	us := int(d / time.Microsecond)
	if us >= len(r.buckets) {
		us = len(r.buckets) - 1
	}
	r.buckets[us]++
	r.n++
}

func (r *latencyRecorder) percentile(p float64) time.Duration {
	want := int(float64(r.n)*p + 0.5)
	seen := 0
	for us, c := range r.buckets {
		seen += int(c)
		if seen >= want && seen > 0 {
			return time.Duration(us) * time.Microsecond
		}
	}
	return time.Duration(len(r.buckets)) * time.Microsecond
}

// BenchmarkClaimRoundTrip measures one claim as a proxy makes it: choose a
// node from the view, offer over NATS, then delete over NATS, on loopback
// against an embedded server. It reports p50/p99 of the pair.
func BenchmarkClaimRoundTrip(b *testing.B) {
	tb := startBus(b)
	startNode(b, tb, "bench", 1000)
	p := startProxy(b, tb, "bench-proxy", fleet.ClaimConfig{})
	eventually(b, 5*time.Second, "node in view", func() bool { return p.view.Has("bench") })
	ctx := context.Background()
	req := &callgridv1.OfferRequest{CallId: "bench", Sdp: []byte("v=0"), Service: callgridv1.MediaService_MEDIA_SERVICE_BRIDGE}
	del := &callgridv1.DeleteRequest{Cause: "bye"}
	rec := new(latencyRecorder)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		req.SessionId = ""
		reply, err := p.claimer.Offer(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		del.SessionId = reply.GetSessionId()
		if _, err := p.claimer.Delete(ctx, reply.GetNodeId(), del); err != nil {
			b.Fatal(err)
		}
		rec.add(time.Since(start))
	}
	b.ReportMetric(float64(rec.percentile(0.50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(rec.percentile(0.99).Microseconds()), "p99-µs")
}
