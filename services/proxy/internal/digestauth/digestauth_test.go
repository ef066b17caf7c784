package digestauth

import (
	"errors"
	"testing"
	"time"

	"github.com/icholy/digest"
)

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
		{name: "no qop", build: func() *Credentials {
			c := creds("MD5", "pw", nonces.Issue(), 1)
			c.QOP = ""
			return c
		}, want: ErrQOPRequired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Verify(tc.build(), "REGISTER")
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("replay and stale", func(t *testing.T) {
		nonce := nonces.Issue()
		if err := v.Verify(creds("SHA-256", "pw", nonce, 1), "REGISTER"); err != nil {
			t.Fatal(err)
		}
		if err := v.Verify(creds("SHA-256", "pw", nonce, 1), "REGISTER"); !errors.Is(err, ErrNonceReplayed) {
			t.Fatalf("replay: %v", err)
		}
		if err := v.Verify(creds("SHA-256", "pw", nonce, 2), "REGISTER"); err != nil {
			t.Fatalf("next nc: %v", err)
		}
		now = now.Add(2 * time.Minute)
		if err := v.Verify(creds("SHA-256", "pw", nonce, 3), "REGISTER"); !errors.Is(err, ErrNonceExpired) {
			t.Fatalf("expired: %v", err)
		}
	})
}

func FuzzNonceAndCredentials(f *testing.F) {
	n := NewNonces([]byte("k"), time.Minute, 100, nil)
	f.Add(n.Issue(), `Digest username="bob", realm="r", nonce="x", uri="sip:a", response="00", qop=auth, nc=00000001, cnonce="c"`)
	f.Fuzz(func(t *testing.T, nonce, header string) {
		_ = n.Check(nonce)
		_ = n.Use(nonce, 1)
		if c, err := ParseCredentials(header); err == nil {
			v := &Verifier{Realm: "r", Nonces: n, Users: func(string, Algorithm) (string, bool) { return "00", true }}
			_ = v.Verify(c, "INVITE")
		}
	})
}
