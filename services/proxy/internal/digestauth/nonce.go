// Package digestauth verifies SIP digest credentials (RFC 3261 22, RFC 7616
// algorithms as adopted for SIP by RFC 8760) with MD5 and SHA-256, qop=auth.
package digestauth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync"
	"time"
)

// Nonce errors, in the order a nonce is checked.
var (
	ErrNonceMalformed = errors.New("nonce malformed")
	ErrNonceForged    = errors.New("nonce signature mismatch")
	ErrNonceExpired   = errors.New("nonce expired")
	ErrNonceReplayed  = errors.New("nonce count replayed")
)

const (
	nonceRandLen = 8
	nonceMACLen  = 16
	nonceLen     = 8 + nonceRandLen + nonceMACLen
)

// Nonces issues HMAC-signed nonces carrying their issue time, so any replica
// sharing the secret can validate them without shared state, and tracks the
// highest nonce-count seen per nonce so a captured request cannot be replayed
// to this replica.
//
// The table is bounded. When it is full the nonce first used longest ago is
// forgotten, and every nonce issued no later than it that is not in the table
// is from then on refused as stale: its counts may be among those forgotten.
// A client that knows the password just answers the fresh challenge; refusing
// new nonces instead would lock every client out until old ones expire.
type Nonces struct {
	secret     []byte
	ttl        time.Duration
	maxTracked int
	now        func() time.Time

	mu   sync.Mutex
	seen map[string]nonceUse
	// order holds the keys of seen, first used first, for eviction.
	order []string
	// floor is the latest issue time among the nonces evicted unexpired.
	floor time.Time
}

type nonceUse struct {
	nc     uint32
	issued time.Time
}

// NewNonces returns a nonce issuer. An empty secret gets a random one, which
// is only right for a single replica. maxTracked bounds the replay table.
func NewNonces(secret []byte, ttl time.Duration, maxTracked int, now func() time.Time) *Nonces {
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	if now == nil {
		now = time.Now
	}
	maxTracked = max(maxTracked, 1)
	return &Nonces{secret: secret, ttl: ttl, maxTracked: maxTracked, now: now, seen: make(map[string]nonceUse, min(maxTracked, 1024))}
}

// Issue returns a fresh nonce.
func (n *Nonces) Issue() string {
	var raw [nonceLen]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(n.now().UnixNano()))
	_, _ = rand.Read(raw[8 : 8+nonceRandLen])
	copy(raw[8+nonceRandLen:], n.mac(raw[:8+nonceRandLen]))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

func (n *Nonces) mac(data []byte) []byte {
	h := hmac.New(sha256.New, n.secret)
	h.Write(data)
	return h.Sum(nil)[:nonceMACLen]
}

// Check validates signature and age without consuming a nonce-count.
func (n *Nonces) Check(nonce string) error {
	_, err := n.issuedAt(nonce)
	return err
}

func (n *Nonces) issuedAt(nonce string) (time.Time, error) {
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) != nonceLen {
		return time.Time{}, ErrNonceMalformed
	}
	if !hmac.Equal(raw[8+nonceRandLen:], n.mac(raw[:8+nonceRandLen])) {
		return time.Time{}, ErrNonceForged
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(raw[:8])))
	if n.expired(issued, n.now()) {
		return issued, ErrNonceExpired
	}
	return issued, nil
}

// Use records nonce-count nc for nonce. It fails unless nc is higher than
// every count seen before for that nonce; call it only after the response
// hash has been verified, so forged requests cannot burn counts. A nonce
// whose counts may have been forgotten fails with ErrNonceExpired (stale).
func (n *Nonces) Use(nonce string, nc uint32) error {
	issued, err := n.issuedAt(nonce)
	if err != nil {
		return err
	}
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if use, ok := n.seen[nonce]; ok {
		if nc <= use.nc {
			return ErrNonceReplayed
		}
		use.nc = nc
		n.seen[nonce] = use
		return nil
	}
	if !issued.After(n.floor) {
		return ErrNonceExpired
	}
	for len(n.seen) >= n.maxTracked {
		n.evictLocked(now)
	}
	n.seen[nonce] = nonceUse{nc: nc, issued: issued}
	n.order = append(n.order, nonce)
	return nil
}

// evictLocked forgets the nonce first used longest ago.
func (n *Nonces) evictLocked(now time.Time) {
	key := n.order[0]
	n.order[0] = ""
	n.order = n.order[1:]
	use := n.seen[key]
	delete(n.seen, key)
	// An expired nonce is refused by its age anyway.
	if !n.expired(use.issued, now) && use.issued.After(n.floor) {
		n.floor = use.issued
	}
}

func (n *Nonces) expired(issued, now time.Time) bool { return now.Sub(issued) > n.ttl }

// Prune forgets nonces that have expired anyway.
func (n *Nonces) Prune() {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	kept := make([]string, 0, len(n.order))
	for _, key := range n.order {
		if n.expired(n.seen[key].issued, now) {
			delete(n.seen, key)
			continue
		}
		kept = append(kept, key)
	}
	// A fresh slice also lets go of the array the evictions advanced over.
	n.order = kept
}
