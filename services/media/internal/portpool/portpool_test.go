package portpool

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
)

// freeRange finds a run of n consecutive free UDP ports starting at an even
// port on loopback, so tests do not collide with other processes.
func freeRange(t *testing.T, n int) (int, int) {
	t.Helper()
	for start := 41000; start < 60000; start += 2 * n {
		ok := true
		for port := start; port < start+n; port++ {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if ok {
			return start, start + n - 1
		}
	}
	t.Fatal("no free port range on loopback")
	return 0, 0
}

func TestNewRange(t *testing.T) {
	tests := []struct {
		name     string
		min, max int
		pairs    int
		wantErr  bool
	}{
		{name: "even to odd", min: 30000, max: 30009, pairs: 5},
		{name: "odd start rounds up", min: 30001, max: 30009, pairs: 4},
		{name: "even end drops last port", min: 30000, max: 30010, pairs: 5},
		{name: "single pair", min: 30000, max: 30001, pairs: 1},
		{name: "one port only", min: 30000, max: 30000, wantErr: true},
		{name: "odd single", min: 30001, max: 30002, wantErr: true},
		{name: "inverted", min: 30010, max: 30000, wantErr: true},
		{name: "zero", min: 0, max: 10, wantErr: true},
		{name: "beyond 65535", min: 65000, max: 70000, wantErr: true},
		{name: "top pair", min: 65534, max: 65535, pairs: 1},
		{name: "odd top port alone", min: 65535, max: 65535, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New("127.0.0.1", tc.min, tc.max)
			if tc.wantErr {
				if !errors.Is(err, ErrBadRange) {
					t.Fatalf("err = %v, want ErrBadRange", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Total() != tc.pairs {
				t.Fatalf("Total() = %d, want %d", p.Total(), tc.pairs)
			}
		})
	}
	if _, err := New("not-an-ip", 30000, 30001); err == nil {
		t.Fatal("bad bind address accepted")
	}
}

func TestAllocateExhaustAndRelease(t *testing.T) {
	min, max := freeRange(t, 6)
	p, err := New("127.0.0.1", min, max)
	if err != nil {
		t.Fatal(err)
	}
	var pairs []*Pair
	for range p.Total() {
		pair, err := p.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		if pair.Port%2 != 0 || pair.Port < min || pair.Port+1 > max {
			t.Fatalf("port %d outside even range %d-%d", pair.Port, min, max)
		}
		if got := pair.RTCP.Port(); got != pair.Port+1 {
			t.Fatalf("rtcp port %d, want %d", got, pair.Port+1)
		}
		pairs = append(pairs, pair)
	}
	if p.InUse() != 3 {
		t.Fatalf("InUse() = %d, want 3", p.InUse())
	}
	if _, err := p.Allocate(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want ErrExhausted", err)
	}

	released := pairs[1].Port
	pairs[1].Release()
	pairs[1].Release() // idempotent
	if p.InUse() != 2 {
		t.Fatalf("InUse() after release = %d, want 2", p.InUse())
	}
	again, err := p.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	if again.Port != released {
		t.Fatalf("reallocated %d, want the only free port %d", again.Port, released)
	}
	again.Release()
	pairs[0].Release()
	pairs[2].Release()
	if p.InUse() != 0 {
		t.Fatalf("InUse() = %d after releasing all", p.InUse())
	}
	// The sockets really are closed: the ports can be bound again.
	for port := min; port <= max; port++ {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			t.Fatalf("port %d still bound after release: %v", port, err)
		}
		c.Close()
	}
}

func TestAllocateConcurrent(t *testing.T) {
	min, max := freeRange(t, 40)
	p, err := New("127.0.0.1", min, max)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[int]bool{}
	)
	for range 8 {
		wg.Go(func() {
			for range 10 {
				pair, err := p.Allocate()
				if errors.Is(err, ErrExhausted) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[pair.Port] {
					t.Errorf("port %d handed out twice", pair.Port)
				}
				seen[pair.Port] = true
				mu.Unlock()
				mu.Lock()
				delete(seen, pair.Port)
				mu.Unlock()
				pair.Release()
			}
		})
	}
	wg.Wait()
	if p.InUse() != 0 {
		t.Fatalf("InUse() = %d after all released", p.InUse())
	}
}

func BenchmarkAllocateRelease(b *testing.B) {
	p, err := New("127.0.0.1", 42000, 42099)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		pair, err := p.Allocate()
		if err != nil {
			b.Fatal(err)
		}
		pair.Release()
	}
}

// Of the free pairs, the one released longest ago is handed out first: the
// one just released is the last to be reused, so that late packets of the
// call that had it find no socket rather than the next call.
func TestReleasedPairIsReusedLast(t *testing.T) {
	min, max := freeRange(t, 8)
	p, err := New("127.0.0.1", min, max)
	if err != nil {
		t.Fatal(err)
	}
	var pairs []*Pair
	for range p.Total() {
		pair, err := p.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, pair)
	}
	defer func() {
		for _, pair := range pairs {
			pair.Release()
		}
	}()
	// Released in the order 2, 0, 3: a new call gets 2, then 0, then 3.
	for _, i := range []int{2, 0, 3} {
		pairs[i].Release()
	}
	for _, i := range []int{2, 0, 3} {
		pair, err := p.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, pair)
		if pair.Port != pairs[i].Port {
			t.Fatalf("allocated %d, want %d, the pair free the longest", pair.Port, pairs[i].Port)
		}
	}
}

// A pair one of whose ports another process holds is skipped, not lost:
// once the port is free again the pool hands the pair out.
func TestPairHeldElsewhereIsSkippedAndTriedAgain(t *testing.T) {
	for _, held := range []struct {
		name   string
		offset int
	}{{"rtp port", 0}, {"rtcp port", 1}} {
		t.Run(held.name, func(t *testing.T) {
			min, max := freeRange(t, 4)
			squatter, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: min + held.offset})
			if err != nil {
				t.Fatal(err)
			}
			p, err := New("127.0.0.1", min, max)
			if err != nil {
				t.Fatal(err)
			}
			pair, err := p.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			defer pair.Release()
			if pair.Port != min+2 {
				t.Fatalf("allocated %d, want %d (first pair is half taken)", pair.Port, min+2)
			}
			if _, err := p.Allocate(); !errors.Is(err, ErrExhausted) {
				t.Fatalf("err = %v, want ErrExhausted", err)
			}
			if p.InUse() != 1 {
				t.Fatalf("InUse() = %d, want 1", p.InUse())
			}
			squatter.Close()
			again, err := p.Allocate()
			if err != nil {
				t.Fatalf("the pair freed by the other process: %v", err)
			}
			defer again.Release()
			if again.Port != min {
				t.Fatalf("allocated %d, want %d", again.Port, min)
			}
		})
	}
}

// A bind that fails for a reason no other port would change (here an
// address the host does not have) is reported as it is, at once, rather
// than as a range that has run out after trying every pair.
func TestAllocateReportsAHostWideBindFailure(t *testing.T) {
	before := openFDs(t)
	p, err := New("192.0.2.1", 30000, 39999) // TEST-NET-1: never a local address
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Allocate()
	if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("err = %v, want the bind's EADDRNOTAVAIL", err)
	}
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want it to count as ErrExhausted for callers", err)
	}
	if p.InUse() != 0 {
		t.Fatalf("InUse() = %d", p.InUse())
	}
	if after := openFDs(t); after != before {
		t.Fatalf("%d descriptors open after a failed Allocate, %d before", after, before)
	}
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}
