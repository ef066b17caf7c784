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
	ErrNonceTableFull = errors.New("nonce table full")
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
type Nonces struct {
	secret     []byte
	ttl        time.Duration
	maxTracked int
	now        func() time.Time

	mu   sync.Mutex
	seen map[string]nonceUse
}

type nonceUse struct {
	nc      uint32
	expires time.Time
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
	return &Nonces{secret: secret, ttl: ttl, maxTracked: maxTracked, now: now, seen: make(map[string]nonceUse)}
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
	if n.now().Sub(issued) > n.ttl {
		return issued, ErrNonceExpired
	}
	return issued, nil
}

// Use records nonce-count nc for nonce. It fails unless nc is higher than
// every count seen before for that nonce; call it only after the response
// hash has been verified, so forged requests cannot burn counts.
func (n *Nonces) Use(nonce string, nc uint32) error {
	issued, err := n.issuedAt(nonce)
	if err != nil {
		return err
	}
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	use, ok := n.seen[nonce]
	if ok && nc <= use.nc {
		return ErrNonceReplayed
	}
	if !ok && len(n.seen) >= n.maxTracked {
		n.pruneLocked(now)
		if len(n.seen) >= n.maxTracked {
			return ErrNonceTableFull
		}
	}
	n.seen[nonce] = nonceUse{nc: nc, expires: issued.Add(n.ttl)}
	return nil
}

func (n *Nonces) pruneLocked(now time.Time) {
	for k, u := range n.seen {
		if now.After(u.expires) {
			delete(n.seen, k)
		}
	}
}

// Prune forgets nonces that have expired anyway.
func (n *Nonces) Prune() {
	now := n.now()
	n.mu.Lock()
	n.pruneLocked(now)
	n.mu.Unlock()
}
