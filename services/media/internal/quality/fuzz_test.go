package quality

import (
	"math"
	"testing"
	"time"
)

// FuzzUpdate drives a receiver with arbitrary packet streams (each record
// of 4 bytes: a 16-bit sequence step, a timestamp step and a signed
// arrival step in ms) and checks
// the report's invariants after every packet.
func FuzzUpdate(f *testing.F) {
	f.Add([]byte{0, 1, 10, 20, 0, 1, 10, 20, 0, 1, 10, 20})             // in order
	f.Add([]byte{0, 1, 10, 20, 0, 0, 0, 0, 0xFF, 0xFF, 0, 1})           // duplicate, step back
	f.Add([]byte{0x80, 0x00, 0xFF, 0xFF, 0, 1, 0, 0x80, 0, 1, 0, 0x7F}) // restart, jitter swings
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReceiver(8000)
		seq := uint16(65000)
		ts := uint32(math.MaxUint32 - 1000)
		arrival := epoch
		for len(data) >= 4 {
			seq += uint16(data[0])<<8 | uint16(data[1]) // modulo 2^16, so it can also go back
			ts += uint32(data[2]) << 4
			arrival = arrival.Add(time.Duration(int8(data[3])) * time.Millisecond)
			data = data[4:]
			r.Update(seq, ts, arrival)

			s := r.Current()
			if int64(s.Lost) != max(0, int64(s.Expected)-int64(s.Packets)) {
				t.Fatalf("Lost %d inconsistent with Expected %d and Packets %d", s.Lost, s.Expected, s.Packets)
			}
			if s.CallPackets < s.Packets || s.CallExpected < s.Expected || s.CallLost < s.Lost {
				t.Fatalf("call totals %d/%d/%d below the source's %d/%d/%d", s.CallPackets, s.CallExpected, s.CallLost, s.Packets, s.Expected, s.Lost)
			}
			if s.Valid && s.CallExpected == 0 {
				t.Fatalf("valid source missing from the call totals")
			}
			if s.FractionLost < 0 || s.FractionLost > 1 || math.IsNaN(s.FractionLost) {
				t.Fatalf("FractionLost %v out of [0, 1]", s.FractionLost)
			}
			if s.JitterMs < 0 || math.IsNaN(s.JitterMs) {
				t.Fatalf("JitterMs %v", s.JitterMs)
			}
			if s.Valid && (s.Expected == 0 || s.Packets == 0) {
				t.Fatalf("valid stream with Expected %d, Packets %d", s.Expected, s.Packets)
			}
			if s.Valid && uint16(s.ExtendedHighestSeq) != r.maxSeq {
				t.Fatalf("ExtendedHighestSeq %d does not end in the highest sequence %d", s.ExtendedHighestSeq, r.maxSeq)
			}
			if m := MOS("PCMU", s.LossPercent(), 20, s.JitterMs); m < 1 || m > 4.5 {
				t.Fatalf("MOS %v out of range", m)
			}
		}
	})
}
