package sipproxy

import (
	"strconv"
	"testing"
	"time"
)

// The answers to relayed CANCELs are kept for the linger, and never more
// than cancelAnswersKept of them: the oldest go first.
func TestCancelAnswersExpireAndStayBounded(t *testing.T) {
	clock := &testClock{now: time.Now()}
	answers := newCancelAnswers(5*time.Second, clock.Now)

	answers.remember("accepted", true)
	answers.remember("unmatched", false)
	if accepted, ok := answers.lookup("accepted"); !ok || !accepted {
		t.Fatalf("accepted: %v %v", accepted, ok)
	}
	if accepted, ok := answers.lookup("unmatched"); !ok || accepted {
		t.Fatalf("unmatched: %v %v", accepted, ok)
	}
	clock.advance(5 * time.Second)
	if _, ok := answers.lookup("accepted"); ok {
		t.Fatal("an answer outlived the linger")
	}

	for i := range cancelAnswersKept + 10 {
		answers.remember(strconv.Itoa(i), true)
	}
	if len(answers.byKey) != cancelAnswersKept {
		t.Fatalf("%d answers kept, want %d", len(answers.byKey), cancelAnswersKept)
	}
	if _, ok := answers.lookup("0"); ok {
		t.Fatal("the oldest answer stayed past the bound")
	}
	if _, ok := answers.lookup(strconv.Itoa(cancelAnswersKept + 9)); !ok {
		t.Fatal("the newest answer is gone")
	}

	// Remembered again, a key outlives the slot it first had.
	answers.remember("again", false)
	answers.remember("again", true)
	for i := range cancelAnswersKept - 1 {
		answers.remember("filler"+strconv.Itoa(i), true)
	}
	if accepted, ok := answers.lookup("again"); !ok || !accepted {
		t.Fatalf("again: %v %v, want its later answer", accepted, ok)
	}
}
