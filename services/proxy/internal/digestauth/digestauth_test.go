package digestauth

import (
	"errors"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

func requestURI(t testing.TB, s string) sip.Uri {
	t.Helper()
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	nonces := NewNonces([]byte("k"), time.Minute, 10, clock)
	v := &Verifier{Realm: "r", Nonces: nonces, Users: func(u string, a Algorithm) (string, bool) {
		if u != "bob" {
			return "", false
		}
		return HA1(a, "bob", "r", "pw"), true
	}}
	creds := func(alg, password, nonce string, nc int) *Credentials {
		c, err := digest.Digest(&digest.Challenge{Realm: "r", Nonce: nonce, Algorithm: alg, QOP: []string{"auth"}},
			digest.Options{Method: "REGISTER", URI: "sip:localhost", Username: "bob", Password: password, Count: nc, Cnonce: "c"})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name    string
		build   func() *Credentials
		advance time.Duration
		want    error
	}{
		{name: "sha-256 ok", build: func() *Credentials { return creds("SHA-256", "pw", nonces.Issue(), 1) }},
		{name: "md5 ok", build: func() *Credentials { return creds("MD5", "pw", nonces.Issue(), 1) }},
		{name: "wrong password", build: func() *Credentials { return creds("MD5", "x", nonces.Issue(), 1) }, want: ErrWrongResponse},
		{name: "forged nonce", build: func() *Credentials { return creds("MD5", "pw", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 1) }, want: ErrNonceForged},
		{name: "unknown user", build: func() *Credentials {
			c := creds("MD5", "pw", nonces.Issue(), 1)
			c.Username = "eve"
			return c
		}, want: ErrUnknownUser},
		{name: "digest uri of another host", build: func() *Credentials {
			c := creds("MD5", "pw", nonces.Issue(), 1)
			c.URI = "sip:elsewhere"
			return c
		}, want: ErrURIMismatch},
		{name: "unparsable digest uri", build: func() *Credentials {
			c := creds("MD5", "pw", nonces.Issue(), 1)
			c.URI = "not a uri"
			return c
		}, want: ErrURIMismatch},
		{name: "no qop", build: func() *Credentials {
			c := creds("MD5", "pw", nonces.Issue(), 1)
			c.QOP = ""
			return c
		}, want: ErrQOPRequired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Verify(tc.build(), "REGISTER", requestURI(t, "sip:localhost"))
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("digest uri matching the request-uri", func(t *testing.T) {
		// The digest uri is "sip:localhost"; sipp's default form names the
		// server without the request's user.
		for _, uri := range []string{"sip:localhost", "sip:LocalHost", "sip:localhost;transport=tcp", "sip:localhost:5060", "sip:bob@localhost"} {
			if err := v.Verify(creds("MD5", "pw", nonces.Issue(), 1), "REGISTER", requestURI(t, uri)); err != nil {
				t.Errorf("request-uri %s: %v", uri, err)
			}
		}
		for _, uri := range []string{"sip:localhost:5070", "sips:localhost", "sip:elsewhere"} {
			if err := v.Verify(creds("MD5", "pw", nonces.Issue(), 1), "REGISTER", requestURI(t, uri)); !errors.Is(err, ErrURIMismatch) {
				t.Errorf("request-uri %s: %v, want %v", uri, err, ErrURIMismatch)
			}
		}
		withUser := creds("MD5", "pw", nonces.Issue(), 1)
		withUser.URI = "sip:alice@localhost"
		if err := v.Verify(withUser, "INVITE", requestURI(t, "sip:bob@localhost")); !errors.Is(err, ErrURIMismatch) {
			t.Errorf("digest uri of another user: %v, want %v", err, ErrURIMismatch)
		}
	})
	t.Run("algorithm not offered", func(t *testing.T) {
		sha := *v
		sha.Algorithms = []Algorithm{AlgorithmSHA256}
		if err := sha.Verify(creds("MD5", "pw", nonces.Issue(), 1), "REGISTER", requestURI(t, "sip:localhost")); !errors.Is(err, ErrAlgorithmNotOffered) {
			t.Errorf("md5 when only sha-256 is offered: %v", err)
		}
		if err := sha.Verify(creds("SHA-256", "pw", nonces.Issue(), 1), "REGISTER", requestURI(t, "sip:localhost")); err != nil {
			t.Errorf("sha-256: %v", err)
		}
	})
	t.Run("replay and stale", func(t *testing.T) {
		nonce := nonces.Issue()
		if err := v.Verify(creds("SHA-256", "pw", nonce, 1), "REGISTER", requestURI(t, "sip:localhost")); err != nil {
			t.Fatal(err)
		}
		if err := v.Verify(creds("SHA-256", "pw", nonce, 1), "REGISTER", requestURI(t, "sip:localhost")); !errors.Is(err, ErrNonceReplayed) {
			t.Fatalf("replay: %v", err)
		}
		if err := v.Verify(creds("SHA-256", "pw", nonce, 2), "REGISTER", requestURI(t, "sip:localhost")); err != nil {
			t.Fatalf("next nc: %v", err)
		}
		now = now.Add(2 * time.Minute)
		if err := v.Verify(creds("SHA-256", "pw", nonce, 3), "REGISTER", requestURI(t, "sip:localhost")); !errors.Is(err, ErrNonceExpired) {
			t.Fatalf("expired: %v", err)
		}
	})
}

func FuzzNonceAndCredentials(f *testing.F) {
	n := NewNonces([]byte("k"), time.Minute, 100, nil)
	f.Add(n.Issue(), `Digest username="bob", realm="r", nonce="x", uri="sip:a", response="00", qop=auth, nc=00000001, cnonce="c"`, "sip:a")
	f.Add(n.Issue(), `Digest username="bob", realm="r", nonce="x", uri="sips:bob@[::1]:5061;transport=tls", algorithm=SHA-256, response="00", qop=auth, nc=ffffffff, cnonce="c"`, "sips:bob@[::1]:5061")
	f.Add("", `Digest realm="r", uri="sip:a", nc=-1, qop="auth", username="\"", response=`, "sip:a")
	f.Add("", `digest nc=7fffffff, algorithm=MD5-sess, userhash=true, realm="r"`, "*")
	f.Fuzz(func(t *testing.T, nonce, header, ruri string) {
		_ = n.Check(nonce)
		_ = n.Use(nonce, 1)
		var uri sip.Uri
		if err := sip.ParseUri(ruri, &uri); err != nil {
			uri = sip.Uri{Scheme: "sip", Host: "a"}
		}
		if c, err := ParseCredentials(header); err == nil {
			v := &Verifier{Realm: "r", Nonces: n, Users: func(string, Algorithm) (string, bool) { return "00", true }}
			_ = v.Verify(c, "INVITE", uri)
		}
	})
}

// TestNonceTableFull: a full replay table must neither lock every client out
// nor forget a nonce in a way that lets its counts be replayed.
func TestNonceTableFull(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	n := NewNonces([]byte("k"), time.Minute, 2, func() time.Time { return now })
	var issued []string
	for range 3 {
		issued = append(issued, n.Issue())
		now = now.Add(time.Second)
	}
	for i, nonce := range issued {
		if err := n.Use(nonce, 1); err != nil {
			t.Fatalf("first use of nonce %d: %v", i, err)
		}
	}
	// The oldest nonce made room for the newest; its counts are gone, so
	// any count for it is refused as stale and the client fetches a new one.
	for _, nc := range []uint32{1, 2} {
		if err := n.Use(issued[0], nc); !errors.Is(err, ErrNonceExpired) {
			t.Errorf("evicted nonce, nc %d: %v, want %v", nc, err, ErrNonceExpired)
		}
	}
	if err := n.Use(issued[2], 1); !errors.Is(err, ErrNonceReplayed) {
		t.Errorf("replay of a tracked nonce: %v", err)
	}
	if err := n.Use(issued[2], 2); err != nil {
		t.Errorf("next count of a tracked nonce: %v", err)
	}
	// A nonce issued after the eviction is tracked as usual.
	later := n.Issue()
	if err := n.Use(later, 1); err != nil {
		t.Errorf("nonce issued after eviction: %v", err)
	}
}

// TestNonceFloodBounded: a flood of authentications, good or bad, keeps
// the replay state within its bound.
func TestNonceFloodBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	const limit = 64
	n := NewNonces([]byte("k"), time.Minute, limit, func() time.Time { return now })
	v := &Verifier{Realm: "r", Nonces: n, Users: func(string, Algorithm) (string, bool) {
		return HA1(AlgorithmMD5, "bob", "r", "pw"), true
	}}
	uri := "sip:localhost"
	for i := range 5000 {
		now = now.Add(time.Millisecond)
		nonce := n.Issue()
		c, err := digest.Digest(&digest.Challenge{Realm: "r", Nonce: nonce, QOP: []string{"auth"}},
			digest.Options{Method: "REGISTER", URI: uri, Username: "bob", Password: "wrong", Count: 1, Cnonce: "c"})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Verify(c, "REGISTER", requestURI(t, uri)); !errors.Is(err, ErrWrongResponse) {
			t.Fatalf("bad password: %v", err)
		}
		if err := n.Use(nonce, 1); err != nil {
			t.Fatalf("use %d: %v", i, err)
		}
		if i%1000 == 999 {
			n.Prune()
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.seen) > limit || len(n.order) > limit {
		t.Fatalf("replay state holds %d nonces in %d slots, bound %d", len(n.seen), len(n.order), limit)
	}
}
