package node

import (
	"errors"
	"testing"
	"time"
)

// openLedger is a ledger of total units holding an open session of one
// unit for each id.
func openLedger(t *testing.T, total int, ids ...string) *ledger {
	t.Helper()
	l := newLedger(total)
	for _, id := range ids {
		if out, _ := l.reserve(&session{id: id, units: 1}); out != reserveOK {
			t.Fatalf("reserve %s: %v", id, out)
		}
		l.opened(id, nil)
	}
	return l
}

func TestLedgerAccountsTranscodingGrowthAndRelease(t *testing.T) {
	l := openLedger(t, 10, "a", "b")
	// A provisional answer (a 183) that transcodes is charged, and
	// answers nothing yet: no call record, no talk time.
	if change, _, err := l.markAnswered("a", true, 0, true, 8, time.Now()); change != 1 || err != nil {
		t.Fatalf("growth to transcode: change %v, %v", change, err)
	}
	if rec := l.callRecord("a", "n"); rec != nil {
		t.Fatalf("a provisional answer made the call answered: %v", rec)
	}
	if s := l.snapshot(); s.used != 9 || s.transcoded != 1 {
		t.Fatalf("after growth: %+v", s)
	}
	// A later answer (the final after a provisional one) that does not
	// transcode gives the units back.
	if change, _, err := l.markAnswered("a", false, 0, false, 8, time.Now()); change != -1 || err != nil {
		t.Fatalf("final answer without transcoding: change %v, %v", change, err)
	}
	if s := l.snapshot(); s.used != 2 || s.transcoded != 0 {
		t.Fatalf("after the final answer: %+v", s)
	}
	if rec := l.callRecord("a", "n"); rec == nil {
		t.Fatal("the final answer left the call unanswered")
	}
	if change, _, err := l.markAnswered("a", true, 0, false, 8, time.Now()); change != 1 || err != nil {
		t.Fatalf("growth to transcode again: change %v, %v", change, err)
	}
	// b cannot grow: 9 + 7 > 10. The node never exceeds its capacity.
	if _, _, err := l.markAnswered("b", true, 0, false, 8, time.Now()); !errors.Is(err, errNoRoomToTranscode) {
		t.Fatal("growth beyond capacity accepted")
	}
	if _, _, err := l.markAnswered("gone", false, 0, false, 8, time.Now()); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("answer of a session that ended meanwhile: %v, want ErrUnknownSession", err)
	}
	l.release("a")
	l.release("b")
	if s := l.snapshot(); s.used != 0 || s.transcoded != 0 || s.sessions != 0 {
		t.Fatalf("after release: %+v", s)
	}
}

// A re-INVITE that starts transcoding a live call is charged even beyond
// the node's units, never refused, and one that stops it gives the units
// back.
func TestLedgerChargesTranscodingStartedByAnUpdate(t *testing.T) {
	l := openLedger(t, 10, "a", "b")
	if change, _ := l.updateTranscoding("a", true, 0, 8); change != 0 {
		t.Fatal("an unanswered session's update was charged")
	}
	for _, id := range []string{"a", "b"} {
		if _, _, err := l.markAnswered(id, false, 0, false, 8, time.Now()); err != nil {
			t.Fatalf("answer %s refused", id)
		}
	}
	first, _ := l.updateTranscoding("a", true, 0, 8)
	second, _ := l.updateTranscoding("a", true, 0, 8)
	if first != +1 || second != 0 {
		t.Fatalf("starting to transcode: changes %d then %d, want one", first, second)
	}
	if change, on := l.updateTranscoding("b", true, 0, 8); change != +1 || !on {
		t.Fatal("an update beyond capacity was refused")
	}
	if s := l.snapshot(); s.used != 16 || s.transcoded != 2 {
		t.Fatalf("both transcoding: %+v, want 16 units used of 10", s)
	}
	if change, on := l.updateTranscoding("a", false, 0, 8); change != -1 || on {
		t.Fatal("stopping to transcode changed nothing")
	}
	if s := l.snapshot(); s.used != 9 || s.transcoded != 1 {
		t.Fatalf("after a stopped: %+v", s)
	}
	l.release("a")
	l.release("b")
	if s := l.snapshot(); s.used != 0 || s.transcoded != 0 || s.sessions != 0 {
		t.Fatalf("after release: %+v", s)
	}
}

func TestDefaultsForPortsKeepTranscodingPossible(t *testing.T) {
	cpuUnits := DefaultCapacityUnits()
	tests := []struct {
		name      string
		calls     int
		wantUnits int
		wantCost  int
	}{
		{name: "cpu bound", calls: cpuUnits * 10, wantUnits: cpuUnits, wantCost: DefaultTranscodeCost},
		{name: "tiny port range", calls: 10, wantUnits: 10, wantCost: 1},
		{name: "no ports", calls: 0, wantUnits: 1, wantCost: 1},
		{name: "half the cpu", calls: cpuUnits / 2, wantUnits: cpuUnits / 2, wantCost: (DefaultTranscodeCost + 1) / 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			units, cost := DefaultsForPorts(tc.calls, 0)
			if units != tc.wantUnits || cost != tc.wantCost {
				t.Fatalf("DefaultsForPorts(%d) = %d units, cost %d; want %d, %d", tc.calls, units, cost, tc.wantUnits, tc.wantCost)
			}
			if cost > units && units > 1 {
				t.Fatalf("a transcoded call (%d) would not fit in %d units", cost, units)
			}
		})
	}
	if _, cost := DefaultsForPorts(10, 3); cost != 3 {
		t.Fatalf("cost %d below a passthrough cost of 3", cost)
	}
}
