package sipproxy

import (
	"crypto/sha256"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// testCancelID is a cancelID made from name, for tests that need many.
func testCancelID(name string) cancelID { return sha256.Sum256([]byte(name)) }

// The answers to relayed CANCELs are kept for the linger, and never more
// than cancelAnswersKept of them: the oldest go first.
func TestCancelAnswersExpireAndStayBounded(t *testing.T) {
	clock := &testClock{now: time.Now()}
	answers := newCancelAnswers(5*time.Second, clock.Now)

	answers.remember(testCancelID("accepted"), true)
	answers.remember(testCancelID("unmatched"), false)
	if accepted, ok := answers.lookup(testCancelID("accepted")); !ok || !accepted {
		t.Fatalf("accepted: %v %v", accepted, ok)
	}
	if accepted, ok := answers.lookup(testCancelID("unmatched")); !ok || accepted {
		t.Fatalf("unmatched: %v %v", accepted, ok)
	}
	clock.advance(5 * time.Second)
	if _, ok := answers.lookup(testCancelID("accepted")); ok {
		t.Fatal("an answer outlived the linger")
	}

	for i := range cancelAnswersKept + 10 {
		answers.remember(testCancelID(strconv.Itoa(i)), true)
	}
	if len(answers.byKey) != cancelAnswersKept {
		t.Fatalf("%d answers kept, want %d", len(answers.byKey), cancelAnswersKept)
	}
	if _, ok := answers.lookup(testCancelID("0")); ok {
		t.Fatal("the oldest answer stayed past the bound")
	}
	if _, ok := answers.lookup(testCancelID(strconv.Itoa(cancelAnswersKept + 9))); !ok {
		t.Fatal("the newest answer is gone")
	}

	// Remembered again, a key outlives the slot it first had.
	answers.remember(testCancelID("again"), false)
	answers.remember(testCancelID("again"), true)
	for i := range cancelAnswersKept - 1 {
		answers.remember(testCancelID("filler"+strconv.Itoa(i)), true)
	}
	if accepted, ok := answers.lookup(testCancelID("again")); !ok || !accepted {
		t.Fatalf("again: %v %v, want its later answer", accepted, ok)
	}
}

// cancelRequest is a CANCEL from 127.0.0.1:5099 with the given Call-ID and CSeq.
func cancelRequest(callID string, cseq uint32) *sip.Request {
	req := sip.NewRequest(sip.CANCEL, sip.Uri{Scheme: "sip", User: "bob", Host: "localhost"})
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: 5099,
		Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "localhost"}, Params: sip.HeaderParams{{K: "tag", V: "a1"}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "localhost"}, Params: sip.NewParams()})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.CANCEL})
	req.SetSource("127.0.0.1:5099")
	return req
}

// A full memory of answers stays small however long the CANCELs' Call-IDs
// are: what it keeps of each is of a fixed size, not the parts named.
func TestCancelAnswersMemoryIndependentOfCallIDLength(t *testing.T) {
	const limit = 2 << 20 // about 850 KB measured, 39 MB keyed by the parts
	callID := strings.Repeat("x", 8<<10) + "@test"
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	answers := newCancelAnswers(time.Minute, time.Now)
	first := cancelRequest(callID, 0)
	answers.remember(cancelKey(first), true)
	for i := range cancelAnswersKept - 1 {
		answers.remember(cancelKey(cancelRequest(callID, uint32(i+1))), true)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d answers hold %d bytes", cancelAnswersKept, grown)
	if grown > limit {
		t.Fatalf("%d answers to CANCELs with %d-byte Call-IDs hold %d bytes, want under %d", cancelAnswersKept, len(callID), grown, limit)
	}
	if _, ok := answers.lookup(cancelKey(first.Clone())); !ok {
		t.Error("a retransmitted CANCEL is not remembered")
	}
	if _, ok := answers.lookup(cancelKey(cancelRequest(callID, 0))); ok {
		t.Error("a CANCEL with another branch matched a remembered one")
	}
	runtime.KeepAlive(answers)
}
