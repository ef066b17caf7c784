package main

import "time"

// histogram counts latencies with 1 µs resolution below 10 ms and 1 ms
// resolution up to 10 s, without allocating per sample.
type histogram struct {
	fine     [10000]uint64 // 1 µs buckets, 0-10 ms
	coarse   [10000]uint64 // 1 ms buckets, 10 ms-10 s
	over     uint64        // 10 s and more
	negative uint64        // received "before" it was sent: a misattributed packet
	count    uint64
	max      int64
}

func newHistogram() *histogram { return &histogram{} }

func (h *histogram) record(ns int64) {
	if ns < 0 {
		h.negative++
		return
	}
	h.count++
	h.max = max(h.max, ns)
	switch us := ns / 1000; {
	case us < int64(len(h.fine)):
		h.fine[us]++
	case us/1000 < int64(len(h.coarse)):
		h.coarse[us/1000]++
	default:
		h.over++
	}
}

func (h *histogram) merge(o *histogram) {
	for i := range h.fine {
		h.fine[i] += o.fine[i]
	}
	for i := range h.coarse {
		h.coarse[i] += o.coarse[i]
	}
	h.over += o.over
	h.negative += o.negative
	h.count += o.count
	h.max = max(h.max, o.max)
}

// quantile returns the upper edge of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	rank := uint64(q*float64(h.count-1)) + 1
	var seen uint64
	for i, c := range h.fine {
		if seen += c; seen >= rank {
			return time.Duration(i+1) * time.Microsecond
		}
	}
	for i, c := range h.coarse {
		if seen += c; seen >= rank {
			return time.Duration(i+1) * time.Millisecond
		}
	}
	return time.Duration(h.max)
}
