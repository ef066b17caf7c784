package quality

import (
	"math"
	"testing"
	"time"
	"unsafe"
)

// packetInterval is the 20 ms packetisation every synthetic stream uses.
const packetInterval = 20 * time.Millisecond

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// feed sends seqs to r as if each was sent on time in order of its
// sequence number (timestamp and arrival follow seq), and returns the
// valid flags.
func feed(r *Receiver, seqs ...uint16) []bool {
	valid := make([]bool, len(seqs))
	for i, seq := range seqs {
		ts := uint32(seq) * 160
		arrival := epoch.Add(time.Duration(seq) * packetInterval)
		valid[i] = r.Update(seq, ts, arrival)
	}
	return valid
}

func run(from uint16, n int) []uint16 {
	seqs := make([]uint16, n)
	for i := range seqs {
		seqs[i] = from + uint16(i)
	}
	return seqs
}

func without(seqs []uint16, drop ...uint16) []uint16 {
	out := seqs[:0:0]
	for _, s := range seqs {
		keep := true
		for _, d := range drop {
			keep = keep && s != d
		}
		if keep {
			out = append(out, s)
		}
	}
	return out
}

func TestReceiverSequence(t *testing.T) {
	// The first packet of a new source is spent on probation (RFC 3550
	// A.1, MIN_SEQUENTIAL = 2), so a clean run of n packets counts n-1.
	tests := []struct {
		desc string
		seqs []uint16
		want Stats
	}{
		{
			desc: "in order",
			seqs: run(1000, 100),
			want: Stats{Packets: 99, Expected: 99, ExtendedHighestSeq: 1099, Valid: true,
				CallPackets: 99, CallExpected: 99},
		},
		{
			desc: "three lost",
			seqs: without(run(1000, 100), 1010, 1050, 1051),
			want: Stats{Packets: 96, Expected: 99, Lost: 3, CumulativeLost: 3, ExtendedHighestSeq: 1099,
				FractionLost: 3.0 / 99, FractionLostQ8: 7, Valid: true, CallPackets: 96, CallExpected: 99, CallLost: 3},
		},
		{
			desc: "wraparound at 65535",
			seqs: run(65530, 20),
			want: Stats{Packets: 19, Expected: 19, ExtendedHighestSeq: 1<<16 + 13, Valid: true,
				CallPackets: 19, CallExpected: 19},
		},
		{
			desc: "loss across wraparound",
			seqs: without(run(65530, 20), 65535, 0),
			want: Stats{Packets: 17, Expected: 19, Lost: 2, CumulativeLost: 2, ExtendedHighestSeq: 1<<16 + 13,
				FractionLost: 2.0 / 19, FractionLostQ8: 26, Valid: true, CallPackets: 17, CallExpected: 19, CallLost: 2},
		},
		{
			desc: "duplicates",
			seqs: append(run(10, 10), 19, 15, 15),
			want: Stats{Packets: 12, Expected: 9, Duplicates: 3, CumulativeLost: -3, ExtendedHighestSeq: 19, Valid: true,
				CallPackets: 12, CallExpected: 9},
		},
		{
			desc: "reordered",
			seqs: []uint16{1, 2, 3, 5, 4, 6, 8, 9, 7, 10},
			want: Stats{Packets: 9, Expected: 9, Reordered: 2, ExtendedHighestSeq: 10, Valid: true,
				CallPackets: 9, CallExpected: 9},
		},
		{
			desc: "late packet across wraparound",
			seqs: []uint16{65533, 65534, 0, 65535, 1},
			want: Stats{Packets: 4, Expected: 4, Reordered: 1, ExtendedHighestSeq: 1<<16 + 1, Valid: true,
				CallPackets: 4, CallExpected: 4},
		},
		{
			desc: "probation restarts on a gap",
			seqs: []uint16{10, 50, 51, 52},
			want: Stats{Packets: 2, Expected: 2, ExtendedHighestSeq: 52, Valid: true,
				CallPackets: 2, CallExpected: 2},
		},
		{
			desc: "still on probation",
			seqs: []uint16{10, 50},
		},
		{
			desc: "stray packet far ahead is ignored",
			seqs: append(run(100, 10), 30000, 110, 111),
			want: Stats{Packets: 11, Expected: 11, ExtendedHighestSeq: 111, Valid: true,
				CallPackets: 11, CallExpected: 11},
		},
		{
			desc: "source restarts after a large jump",
			seqs: append(run(100, 10), 30000, 30001, 30002),
			// The report starts over with the restarted source; the
			// call keeps the 9 counted before it.
			want: Stats{Packets: 2, Expected: 2, ExtendedHighestSeq: 30002, Valid: true,
				CallPackets: 9 + 2, CallExpected: 9 + 2},
		},
		{
			desc: "loss before a restart stays the call's",
			seqs: append(without(run(100, 10), 105), 30000, 30001, 30002),
			want: Stats{Packets: 2, Expected: 2, ExtendedHighestSeq: 30002, Valid: true,
				CallPackets: 8 + 2, CallExpected: 9 + 2, CallLost: 1},
		},
		{
			desc: "jump within MaxDropout is loss",
			seqs: []uint16{1, 2, 3, 2003},
			want: Stats{Packets: 3, Expected: 2002, Lost: 1999, CumulativeLost: 1999, ExtendedHighestSeq: 2003,
				FractionLost: 1999.0 / 2002, FractionLostQ8: 255, Valid: true,
				CallPackets: 3, CallExpected: 2002, CallLost: 1999},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := NewReceiver(8000)
			feed(r, tt.seqs...)
			got := r.Snapshot()
			got.Jitter, got.JitterMs = 0, 0 // covered by TestJitter
			if math.Abs(got.FractionLost-tt.want.FractionLost) < 1e-12 {
				got.FractionLost = tt.want.FractionLost
			}
			if got != tt.want {
				t.Fatalf("stats\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestReceiverUpdateReportsValidity(t *testing.T) {
	r := NewReceiver(8000)
	got := feed(r, 7, 8, 9, 40000, 10)
	want := []bool{false, true, true, false, true}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Update results %v, want %v", got, want)
		}
	}
}

func TestFractionLostPerInterval(t *testing.T) {
	r := NewReceiver(8000)
	feed(r, without(run(0, 101), 50)...)
	if got := r.Snapshot(); got.FractionLostQ8 != 2 { // 1 of 100: 256/100
		t.Fatalf("first interval FractionLostQ8 %d, want 2", got.FractionLostQ8)
	}
	feed(r, without(run(101, 10), 105, 106)...)
	if got := r.Current(); got.FractionLost != 0.2 || got.Lost != 3 {
		t.Fatalf("second interval: FractionLost %v (want 0.2), Lost %d (want 3)", got.FractionLost, got.Lost)
	}
	// Current does not start an interval; Snapshot does.
	if got := r.Snapshot(); got.FractionLost != 0.2 {
		t.Fatalf("FractionLost %v after Current, want 0.2", got.FractionLost)
	}
	feed(r, run(111, 10)...)
	if got := r.Snapshot(); got.FractionLost != 0 {
		t.Fatalf("clean interval FractionLost %v, want 0", got.FractionLost)
	}
}

// TestJitter drives the A.8 estimator with streams whose jitter is known.
func TestJitter(t *testing.T) {
	tests := []struct {
		desc      string
		clockRate int
		startTS   uint32
		// offset returns how late packet i arrives beyond its schedule.
		offset func(i int) time.Duration
		// wantMs is the value the estimate converges to.
		wantMs float64
	}{
		{"perfect arrival", 8000, 0, func(int) time.Duration { return 0 }, 0},
		{"constant delay", 8000, 0, func(int) time.Duration { return 35 * time.Millisecond }, 0},
		// Alternating 0/4 ms lateness changes transit by 4 ms on every
		// packet, so |D| is always 4 ms and J converges to it.
		{"alternating 4 ms", 8000, 0, alternate(4 * time.Millisecond), 4},
		{"alternating 4 ms at 48 kHz", 48000, 0, alternate(4 * time.Millisecond), 4},
		{"timestamp wraparound", 8000, math.MaxUint32 - 160*50, alternate(10 * time.Millisecond), 10},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := NewReceiver(tt.clockRate)
			step := uint32(tt.clockRate / 50)
			for i := range 1000 {
				arrival := epoch.Add(time.Duration(i)*packetInterval + tt.offset(i))
				r.Update(uint16(i), tt.startTS+uint32(i)*step, arrival)
			}
			got := r.Snapshot()
			// The integer form converges to within a unit of the true
			// value.
			tolerance := 1000.0/float64(tt.clockRate) + 1e-9
			if math.Abs(got.JitterMs-tt.wantMs) > tolerance {
				t.Fatalf("JitterMs %.3f, want %.3f ± %.3f", got.JitterMs, tt.wantMs, tolerance)
			}
			wantUnits := tt.wantMs * float64(tt.clockRate) / 1000
			if math.Abs(float64(got.Jitter)-wantUnits) > 1 {
				t.Fatalf("Jitter %d units, want %.0f", got.Jitter, wantUnits)
			}
		})
	}
}

func alternate(d time.Duration) func(int) time.Duration {
	return func(i int) time.Duration { return time.Duration(i%2) * d }
}

// TestJitterMatchesFormula checks the estimator step by step against the
// A.8 recurrence in floating point on an irregular sequence.
func TestJitterMatchesFormula(t *testing.T) {
	r := NewReceiver(8000)
	lateness := []int{0, 3, 1, 7, 2, 2, 9, 0, 4, 15, 1, 6, 0, 0, 5}
	var j float64
	var prevTransit float64
	for i := range 300 {
		late := lateness[i%len(lateness)] // ms
		arrivalMs := float64(i*20 + late)
		r.Update(uint16(i), uint32(i*160), epoch.Add(time.Duration(arrivalMs*float64(time.Millisecond))))
		transit := arrivalMs*8 - float64(i*160)
		if i > 0 {
			j += (math.Abs(transit-prevTransit) - j) / 16
		}
		prevTransit = transit
	}
	// The first packet goes to probation and is not part of the estimate,
	// which the float model includes; after 300 packets that no longer
	// matters beyond rounding.
	got := float64(r.Current().Jitter)
	if math.Abs(got-j) > 1 {
		t.Fatalf("Jitter %v units, formula gives %.2f", got, j)
	}
}

func TestArrivalUnitsLongCall(t *testing.T) {
	// A naive nanoseconds × clock rate product overflows int64 after about
	// 53 hours at 48 kHz; the conversion must stay exact (modulo 2^32,
	// like RTP timestamps) well beyond that.
	tests := []struct {
		clockRate int
		after     time.Duration
		want      uint32
	}{
		{8000, 20 * time.Millisecond, 160},
		{48000, 10 * time.Hour, 1_728_000_000},
		{48000, 100*time.Hour + 20*time.Millisecond, uint32((100*3600*48000 + 960) % (1 << 32))},
		{8000, -20 * time.Millisecond, math.MaxUint32 - 159},
	}
	for _, tt := range tests {
		t.Run(tt.after.String(), func(t *testing.T) {
			r := NewReceiver(tt.clockRate)
			r.epoch, r.hasEpoch = epoch.Sub(clockBase), true
			if got := r.arrivalUnits(epoch.Add(tt.after)); got != tt.want {
				t.Fatalf("arrivalUnits = %d, want %d", got, tt.want)
			}
		})
	}
}

// Every packet of an RFC 4733 event repeats the event's start timestamp:
// counted in the sequence, such packets must not show as jitter on a
// stream that arrives exactly on time.
func TestEventPacketsAreNotJitter(t *testing.T) {
	r := NewReceiver(8000)
	seq, ts := uint16(1), uint32(0)
	at := epoch
	audio := func(n int) {
		for range n {
			r.Update(seq, ts, at)
			seq, ts, at = seq+1, ts+160, at.Add(packetInterval)
		}
	}
	audio(15)
	for range 28 { // a 500 ms digit and its three end packets
		r.UpdateEvent(seq)
		seq, ts, at = seq+1, ts+160, at.Add(packetInterval)
	}
	audio(15)
	st := r.Current()
	if st.Jitter != 0 || st.Lost != 0 || st.Packets != 58-MinSequential+1 {
		t.Fatalf("stats = %+v, want no jitter, no loss, every packet counted", st)
	}
}

// A new SSRC's sequence numbers and timestamps are unrelated to the last
// one's: after NewSource, a new stream on time shows no jitter, however
// far its timestamps are from the old ones, even when its sequence
// numbers happen to follow on.
func TestNewSourceStartsOver(t *testing.T) {
	r := NewReceiver(8000)
	at := epoch
	for i := range 30 {
		ts := uint32(i) * 160
		if i == 15 {
			r.NewSource()
		}
		if i >= 15 {
			ts += 0x70000000
		}
		r.Update(uint16(500+i), ts, at)
		at = at.Add(packetInterval)
	}
	if st := r.Current(); st.Jitter != 0 || st.Lost != 0 {
		t.Fatalf("stats after a new source = %+v, want no jitter and no loss", st)
	}
}

// A new SSRC starts the report's counts over (RFC 3550 §6.4.1), but not
// the call's: the loss under the earlier source is still the call's, and
// a source that never passed probation adds nothing.
func TestNewSourceKeepsTheCallsTotals(t *testing.T) {
	r := NewReceiver(8000)
	feed(r, without(run(100, 20), 105, 106)...) // 17 counted of 19 expected, 2 lost
	r.NewSource()
	if st := r.Current(); st.Valid || st.CallPackets != 17 || st.CallExpected != 19 || st.CallLost != 2 {
		t.Fatalf("stats after NewSource = %+v, want the first source's 17 of 19 in the call totals", st)
	}
	feed(r, 7000) // on probation: not counted
	r.NewSource() // finished before it was ever counted
	feed(r, run(9000, 11)...)
	st := r.Current()
	if st.Packets != 10 || st.Expected != 10 || st.Lost != 0 {
		t.Fatalf("report counts %+v, want the last source's only", st)
	}
	if st.CallPackets != 17+10 || st.CallExpected != 19+10 || st.CallLost != 2 {
		t.Fatalf("call totals %+v, want both counted sources'", st)
	}
}

// The receiver's layout is part of its speed (see Receiver): an in-order
// packet's state must stay within the first cache line, and the size must
// stay one the allocator aligns to it.
func TestReceiverHotStateIsOneCacheLine(t *testing.T) {
	var r Receiver
	if size := unsafe.Sizeof(r); size != 128 {
		t.Errorf("Receiver is %d bytes, want 128", size)
	}
	for name, end := range map[string]uintptr{
		"mu":       unsafe.Offsetof(r.mu) + unsafe.Sizeof(r.mu),
		"seen":     unsafe.Offsetof(r.seen) + unsafe.Sizeof(r.seen),
		"epoch":    unsafe.Offsetof(r.epoch) + unsafe.Sizeof(r.epoch),
		"jitterQ4": unsafe.Offsetof(r.jitterQ4) + unsafe.Sizeof(r.jitterQ4),
		"received": unsafe.Offsetof(r.received) + unsafe.Sizeof(r.received),
		"cycles":   unsafe.Offsetof(r.cycles) + unsafe.Sizeof(r.cycles),
	} {
		if end > 64 {
			t.Errorf("%s ends at byte %d, past the first cache line", name, end)
		}
	}
}
