package quality

import (
	"testing"
	"time"
)

func BenchmarkUpdate(b *testing.B) {
	r := NewReceiver(8000)
	arrival := epoch
	var seq uint16
	var ts uint32
	b.ReportAllocs()
	for b.Loop() {
		// 1 % loss and a little jitter, so every branch of a real stream
		// is exercised.
		seq++
		ts += 160
		arrival = arrival.Add(packetInterval + time.Duration(seq%7)*time.Millisecond)
		if seq%100 == 0 {
			continue
		}
		r.Update(seq, ts, arrival)
	}
}

func BenchmarkSnapshot(b *testing.B) {
	r := NewReceiver(8000)
	feed(r, run(0, 1000)...)
	b.ReportAllocs()
	for b.Loop() {
		r.Snapshot()
	}
}

func BenchmarkMOS(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		MOS("opus", 1.5, 120, 12)
	}
}
