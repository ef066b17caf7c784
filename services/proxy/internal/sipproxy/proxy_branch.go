package sipproxy

import (
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"math/rand/v2"
	"strings"
	"sync"
)

// branchMACLen is the length in hex digits of the signature that ends the
// branches this proxy puts on requests: 64 bits, which nobody guesses
// before the responses they would forge stop mattering.
const branchMACLen = 16

// branchSigner signs the branches of our Vias, so that a response matching
// no transaction can be told apart from one somebody wrote with our address
// in its top Via: only the first may be relayed statelessly (RFC 6026 8.9).
type branchSigner struct {
	key  []byte
	macs sync.Pool // *branchMAC, so signing allocates nothing
}

// branchMAC is one HMAC-SHA256 with the buffers it writes from and into.
type branchMAC struct {
	h   hash.Hash
	in  []byte
	sum [sha256.Size]byte
}

// newBranchSigner keys the signatures with the replicas' shared secret, so
// that a 2xx the callee retransmits to the service address after the
// transaction has gone verifies on whichever replica it reaches; without
// one (a lone replica) the key is random for the process.
func newBranchSigner(secret string) *branchSigner {
	var key []byte
	if secret != "" {
		sum := sha256.Sum256([]byte("callgrid branch signature\x00" + secret))
		key = sum[:]
	} else {
		key = make([]byte, sha256.Size)
		_, _ = crand.Read(key)
	}
	b := &branchSigner{key: key}
	b.macs.New = func() any { return &branchMAC{h: hmac.New(sha256.New, b.key), in: make([]byte, 0, 128)} }
	return b
}

// appendMAC appends the hex signature of the branch part signed, in the
// call callID, to dst.
func (b *branchSigner) appendMAC(dst []byte, signed []byte, callID string) []byte {
	m := b.macs.Get().(*branchMAC)
	m.in = append(append(append(m.in[:0], signed...), 0), callID...)
	m.h.Reset()
	m.h.Write(m.in)
	sum := m.h.Sum(m.sum[:0])
	var mac [branchMACLen / 2]byte
	copy(mac[:], sum)
	b.macs.Put(m)
	return hex.AppendEncode(dst, mac[:])
}

// newBranch returns a unique branch for a request of the call callID:
// our prefix, the loop hash, a random part and the signature of both.
func (s *Server) newBranch(loop, callID string) string {
	var buf [96]byte
	b := append(buf[:0], branchPrefix...)
	b = append(b, loop...)
	b = append(b, '.')
	// Unique, not secret: the signature is what cannot be forged.
	var random [8]byte
	binary.BigEndian.PutUint64(random[:], rand.Uint64())
	b = hex.AppendEncode(b, random[:])
	signed := len(b)
	b = append(b, '.')
	b = s.branches.appendMAC(b, b[len(branchPrefix):signed], callID)
	return string(b)
}

// signedBranch reports whether branch is one newBranch made, here or on
// another replica sharing the secret, for a request of the call callID.
func (s *Server) signedBranch(branch, callID string) bool {
	rest, ok := strings.CutPrefix(branch, branchPrefix)
	i := strings.LastIndexByte(rest, '.')
	if !ok || i < 0 || len(rest)-i-1 != branchMACLen {
		return false
	}
	var buf [128]byte
	want := append(buf[:0], rest[:i+1]...)
	want = s.branches.appendMAC(want, want[:i], callID)
	return hmac.Equal(want[i+1:], []byte(rest[i+1:]))
}
