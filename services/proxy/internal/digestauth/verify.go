package digestauth

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// Algorithm is a digest hash algorithm.
type Algorithm int

// Supported algorithms; the zero value is unknown.
const (
	AlgorithmUnknown Algorithm = iota
	AlgorithmMD5
	AlgorithmSHA256
)

func (a Algorithm) String() string {
	switch a {
	case AlgorithmMD5:
		return "MD5"
	case AlgorithmSHA256:
		return "SHA-256"
	}
	return "unknown"
}

// ParseAlgorithm reads an algorithm token; an empty token means MD5 (RFC 2617).
func ParseAlgorithm(s string) (Algorithm, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "", "MD5":
		return AlgorithmMD5, nil
	case "SHA-256":
		return AlgorithmSHA256, nil
	}
	return AlgorithmUnknown, fmt.Errorf("unsupported digest algorithm %q", s)
}

func (a Algorithm) newHash() hash.Hash {
	if a == AlgorithmSHA256 {
		return sha256.New()
	}
	return md5.New()
}

// HA1 computes H(username:realm:password) for provisioning tools and tests.
func HA1(a Algorithm, username, realm, password string) string {
	return hashHex(a, username+":"+realm+":"+password)
}

func hashHex(a Algorithm, s string) string {
	h := a.newHash()
	h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil))
}

// Verification failures. Stale is separate: the client knew the password but
// used an old nonce, so it gets a fresh challenge with stale=true.
var (
	ErrNoCredentials  = errors.New("no credentials for realm")
	ErrBadCredentials = errors.New("credentials malformed")
	ErrUnknownUser    = errors.New("unknown user")
	ErrWrongResponse  = errors.New("digest response mismatch")
	ErrQOPRequired    = errors.New("qop=auth required")
	// ErrURIMismatch: the digest uri is not the Request-URI, so the response
	// was computed for another request (RFC 7616 3.4.6 asks for 400).
	ErrURIMismatch = errors.New("digest uri differs from request-uri")
	// ErrAlgorithmNotOffered: the credentials use an algorithm the verifier
	// does not offer, which is how a downgrade to MD5 would look.
	ErrAlgorithmNotOffered = errors.New("digest algorithm not offered")
)

// Credentials are the parsed Authorization / Proxy-Authorization values.
type Credentials = digest.Credentials

// ParseCredentials parses one header value, "Digest k=v, ...".
func ParseCredentials(value string) (*Credentials, error) {
	c, err := digest.ParseCredentials(value)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCredentials, err)
	}
	return c, nil
}

// UserHA1 returns the stored HA1 for a user and algorithm, or false.
type UserHA1 func(username string, a Algorithm) (string, bool)

// Verifier checks credentials against stored HA1 values and the nonce issuer.
type Verifier struct {
	Realm  string
	Nonces *Nonces
	Users  UserHA1
	// Algorithms are the algorithms challenges offer; credentials using
	// another are refused, whatever HA1 the user has. Empty allows all.
	Algorithms []Algorithm
}

// Verify checks credentials c for a request with the given method and
// Request-URI. On success it consumes the nonce-count.
// errors.Is(err, ErrNonceExpired) means stale.
func (v *Verifier) Verify(c *Credentials, method string, requestURI sip.Uri) error {
	if c.Realm != v.Realm {
		return ErrNoCredentials
	}
	alg, err := ParseAlgorithm(c.Algorithm)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadCredentials, err)
	}
	if len(v.Algorithms) > 0 && !slices.Contains(v.Algorithms, alg) {
		return ErrAlgorithmNotOffered
	}
	if !strings.EqualFold(c.QOP, "auth") {
		// Without qop there is no nonce-count, so replays could not be refused.
		return ErrQOPRequired
	}
	if c.Nc <= 0 || c.Cnonce == "" || c.URI == "" || c.Username == "" {
		return ErrBadCredentials
	}
	if !sameResource(c.URI, requestURI) {
		return ErrURIMismatch
	}
	if err := v.Nonces.Check(c.Nonce); err != nil && !errors.Is(err, ErrNonceExpired) {
		return err
	}
	ha1, ok := v.Users(c.Username, alg)
	if !ok {
		return ErrUnknownUser
	}
	ha2 := hashHex(alg, method+":"+c.URI)
	want := hashHex(alg, fmt.Sprintf("%s:%s:%08x:%s:%s:%s", strings.ToLower(ha1), c.Nonce, c.Nc, c.Cnonce, "auth", ha2))
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(c.Response))) != 1 {
		return ErrWrongResponse
	}
	// Expiry is checked after the hash so that only a client that knows the
	// password is told its nonce is stale.
	return v.Nonces.Use(c.Nonce, uint32(c.Nc))
}

// Challenge renders a WWW-Authenticate / Proxy-Authenticate value.
func (v *Verifier) Challenge(a Algorithm, stale bool) string {
	var b strings.Builder
	b.WriteString(`Digest realm="`)
	b.WriteString(v.Realm)
	b.WriteString(`", nonce="`)
	b.WriteString(v.Nonces.Issue())
	b.WriteString(`", algorithm=`)
	b.WriteString(a.String())
	b.WriteString(`, qop="auth"`)
	if stale {
		b.WriteString(", stale=true")
	}
	return b.String()
}

// sameResource reports whether the digest uri names the Request-URI's
// resource: scheme, host and port as RFC 3261 19.1.4 compares them (a port
// left out is the scheme's default), and the user when the digest uri has
// one. URI parameters are left out, as clients commonly leave them out of
// the digest uri (sipgo's client does), and so may the user be: sipp, by
// default, and some phones answer with the address of the server they
// sent to, "sip:host:port".
func sameResource(digestURI string, requestURI sip.Uri) bool {
	var u sip.Uri
	if err := sip.ParseUri(digestURI, &u); err != nil {
		return false
	}
	return strings.EqualFold(u.Scheme, requestURI.Scheme) &&
		(u.User == "" || u.User == requestURI.User) &&
		strings.EqualFold(u.Host, requestURI.Host) &&
		portOrDefault(u) == portOrDefault(requestURI)
}

func portOrDefault(u sip.Uri) int {
	switch {
	case u.Port != 0:
		return u.Port
	case strings.EqualFold(u.Scheme, "sips"):
		return 5061
	}
	return 5060
}
