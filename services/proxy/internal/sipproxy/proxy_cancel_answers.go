package sipproxy

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// cancelAnswersKept bounds how many answers to relayed CANCELs a replica
// remembers: many times what it answers within a transaction linger at the
// rate the relay allows (cancel_relay_max_pending per relay timeout, 128/s
// by default). Each is kept as a fixed-size digest of the CANCEL (cancelID)
// with its answer and deadline, in the map and in the ring, so a full memory
// stays under a megabyte (about 850 KB) however long the Call-IDs and URIs.
// Past it the oldest is forgotten, which only costs its retransmission a
// second offer.
const cancelAnswersKept = 4096

// cancelAnswers remembers how the CANCELs this replica relayed over UDP
// were answered, for as long as sipgo keeps an answered transaction. sipgo
// sends the response to a CANCEL past its server transaction, which then
// ends as if unanswered: without this, a retransmission of the CANCEL, sent
// because the answer was lost or crossed it, would be offered to the other
// replicas again, wait for them again, and could get 481 where the first
// got 200, once the INVITE it cancelled has ended.
type cancelAnswers struct {
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	byKey map[cancelID]cancelAnswer
	// ring holds the keys in the order remembered, oldest at head, so the
	// expired and the overflowing go first.
	ring []rememberedCancel
	head int
	n    int
	// seq tells a key's slots apart when it was remembered more than once.
	seq uint64
}

type cancelAnswer struct {
	accepted bool
	until    time.Time
	seq      uint64
}

type rememberedCancel struct {
	key   cancelID
	until time.Time
	seq   uint64
}

func newCancelAnswers(ttl time.Duration, now func() time.Time) *cancelAnswers {
	return &cancelAnswers{ttl: ttl, now: now, byKey: make(map[cancelID]cancelAnswer), ring: make([]rememberedCancel, cancelAnswersKept)}
}

// lookup reports how the CANCEL with key was answered, if it was lately.
func (a *cancelAnswers) lookup(key cancelID) (accepted, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ans, ok := a.byKey[key]
	if !ok || !a.now().Before(ans.until) {
		return false, false
	}
	return ans.accepted, true
}

// remember records the answer to the CANCEL with key.
func (a *cancelAnswers) remember(key cancelID, accepted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	for a.n > 0 && (a.n == len(a.ring) || !now.Before(a.ring[a.head].until)) {
		a.forgetOldest()
	}
	until := now.Add(a.ttl)
	a.seq++
	a.byKey[key] = cancelAnswer{accepted: accepted, until: until, seq: a.seq}
	a.ring[(a.head+a.n)%len(a.ring)] = rememberedCancel{key: key, until: until, seq: a.seq}
	a.n++
}

func (a *cancelAnswers) forgetOldest() {
	old := a.ring[a.head]
	// The key may have been remembered again since, in a later slot.
	if ans, ok := a.byKey[old.key]; ok && ans.seq == old.seq {
		delete(a.byKey, old.key)
	}
	a.ring[a.head] = rememberedCancel{}
	a.head = (a.head + 1) % len(a.ring)
	a.n--
}

// cancelID is the SHA-256 of a CANCEL's cancelKey parts: what the memory
// keeps of each instead of the parts themselves, which a Call-ID or
// Request-URI of kilobytes would make up to several kilobytes long.
type cancelID [sha256.Size]byte

// cancelKey names a CANCEL and its retransmissions: what of it the replica
// holding the INVITE matches on (liveInvite), and where it came from, so
// that a CANCEL forged from what hops downstream read cannot stand in for
// the caller's own. Each part goes into the digest after its length, so
// no choice of bytes in one part can shift the boundary with the next.
func cancelKey(req *sip.Request) cancelID {
	via := req.Via()
	branch, _ := via.Params.Get("branch")
	tag, _ := req.From().Params.Get("tag")
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, part := range []string{
		req.Source(), branch, via.Host, strconv.Itoa(via.Port),
		req.CallID().Value(), tag, strconv.FormatUint(uint64(req.CSeq().SeqNo), 10), req.Recipient.String(),
	} {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(part)))])
		io.WriteString(h, part)
	}
	var id cancelID
	h.Sum(id[:0])
	return id
}
