package sipproxy

import (
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// abandonedKept bounds how many abandoned INVITE branches a replica
// remembers. Each entry is the branch (under a hundred bytes) and the few
// headers a hang-up needs, a kilobyte or so with long URIs: a full memory
// stays within a few megabytes. Past it the oldest is forgotten, and its
// late answer is relayed upstream as before.
const abandonedKept = 4096

// abandonedBranches remembers the INVITE branches the proxy gave up on
// (branch timeout, Timer C without a provisional, no answer to its CANCEL)
// for as long as their callee may still answer and repeat the answer:
// 64*T1, the time a UAS retransmits a 2xx for (RFC 3261 13.3.1.4). Such an
// answer matches no transaction; the caller has moved on to another branch
// or has its final response, so the callee is hung up instead.
type abandonedBranches struct {
	ttl time.Duration
	now func() time.Time

	mu       sync.Mutex
	byBranch map[string]abandonedBranch
	// ring holds the branches in the order remembered, oldest at head.
	ring []rememberedBranch
	head int
	n    int
}

// abandonedBranch is what hanging up a late answer to the branch takes.
type abandonedBranch struct {
	inv   *sip.Request
	log   zerolog.Logger
	until time.Time
	// hungUp is set once the first late answer was hung up: its
	// retransmissions are only dropped.
	hungUp bool
}

type rememberedBranch struct {
	branch string
	until  time.Time
}

func newAbandonedBranches(ttl time.Duration, now func() time.Time) *abandonedBranches {
	return &abandonedBranches{ttl: ttl, now: now, byBranch: make(map[string]abandonedBranch), ring: make([]rememberedBranch, abandonedKept)}
}

// remember records that the INVITE branch out was abandoned.
func (a *abandonedBranches) remember(log *zerolog.Logger, out *sip.Request) {
	via := out.Via()
	if via == nil {
		return
	}
	branch := via.Params.GetOr("branch", "")
	// Only what hangUpLateAnswer reads, not the whole request and its body.
	inv := sip.NewRequest(sip.INVITE, *out.Recipient.Clone())
	inv.AppendHeader(sip.HeaderClone(out.From()))
	inv.AppendHeader(sip.HeaderClone(out.To()))
	inv.AppendHeader(sip.HeaderClone(out.CallID()))
	inv.AppendHeader(sip.HeaderClone(out.CSeq()))
	inv.SetTransport(out.Transport())

	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	for a.n > 0 && (a.n == len(a.ring) || !now.Before(a.ring[a.head].until)) {
		a.forgetOldest()
	}
	until := now.Add(a.ttl)
	a.byBranch[branch] = abandonedBranch{inv: inv, log: *log, until: until}
	a.ring[(a.head+a.n)%len(a.ring)] = rememberedBranch{branch: branch, until: until}
	a.n++
}

// answered looks up the abandoned branch a late answer belongs to. first
// is true for the first answer, which the caller is to hang up.
func (a *abandonedBranches) answered(branch string) (b abandonedBranch, first, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok = a.byBranch[branch]
	if !ok || !a.now().Before(b.until) {
		return abandonedBranch{}, false, false
	}
	if b.hungUp {
		return b, false, true
	}
	b.hungUp = true
	a.byBranch[branch] = b
	return b, true, true
}

func (a *abandonedBranches) forgetOldest() {
	old := a.ring[a.head]
	// Branches are unique: a slot's branch was remembered in that slot only.
	if b, ok := a.byBranch[old.branch]; ok && b.until.Equal(old.until) {
		delete(a.byBranch, old.branch)
	}
	a.ring[a.head] = rememberedBranch{}
	a.head = (a.head + 1) % len(a.ring)
	a.n--
}
