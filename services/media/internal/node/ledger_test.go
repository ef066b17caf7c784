package node

import (
	"testing"
	"time"
)

func TestLedgerAccountsTranscodingGrowthAndRelease(t *testing.T) {
	l := newLedger(10)
	for _, id := range []string{"a", "b"} {
		if out, _ := l.reserve(&session{id: id, units: 1}); out != reserveOK {
			t.Fatalf("reserve %s: %v", id, out)
		}
		l.opened(id, nil)
	}
	if grown, ok := l.markAnswered("a", true, 8, time.Now()); !grown || !ok {
		t.Fatalf("growth to transcode: grown %v ok %v", grown, ok)
	}
	if s := l.snapshot(); s.used != 9 || s.transcoded != 1 {
		t.Fatalf("after growth: %+v", s)
	}
	// b cannot grow: 9 + 7 > 10. The node never exceeds its capacity.
	if _, ok := l.markAnswered("b", true, 8, time.Now()); ok {
		t.Fatal("growth beyond capacity accepted")
	}
	l.release("a")
	l.release("b")
	if s := l.snapshot(); s.used != 0 || s.transcoded != 0 || s.sessions != 0 {
		t.Fatalf("after release: %+v", s)
	}
}
