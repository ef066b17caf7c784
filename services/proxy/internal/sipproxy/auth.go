package sipproxy

import (
	"errors"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/services/proxy/internal/digestauth"
)

// authenticator challenges and verifies digest credentials for REGISTER
// (401/WWW-Authenticate) and for proxied requests (407/Proxy-Authenticate).
type authenticator struct {
	algorithms []digestauth.Algorithm
	nonces     *digestauth.Nonces
	users      map[string]User
	verifier   *digestauth.Verifier
}

func (a *authenticator) ha1(username string, alg digestauth.Algorithm) (string, bool) {
	u, ok := a.users[username]
	if !ok {
		return "", false
	}
	switch alg {
	case digestauth.AlgorithmMD5:
		return u.HA1MD5, u.HA1MD5 != ""
	case digestauth.AlgorithmSHA256:
		return u.HA1SHA256, u.HA1SHA256 != ""
	}
	return "", false
}

// authOutcome is the result of checking a request's credentials.
type authOutcome struct {
	// user is the authenticated username when ok.
	user string
	ok   bool
	// stale asks the client to retry with a fresh nonce (stale=true).
	stale bool
	// uriMismatch: the credentials were computed for another Request-URI.
	uriMismatch bool
	// failure is the metric reason when credentials were present but wrong.
	failure string
}

// check looks for credentials of our realm in the request.
func (a *authenticator) check(req *sip.Request, proxy bool) authOutcome {
	name := "Authorization"
	if proxy {
		name = "Proxy-Authorization"
	}
	var out authOutcome
	for _, h := range req.GetHeaders(name) {
		creds, err := digestauth.ParseCredentials(h.Value())
		if err != nil {
			out.failure = "malformed"
			continue
		}
		err = a.verifier.Verify(creds, string(req.Method), req.Recipient)
		switch {
		case err == nil:
			return authOutcome{user: creds.Username, ok: true}
		case errors.Is(err, digestauth.ErrNoCredentials):
			continue // another realm's credentials, meant for someone else
		case errors.Is(err, digestauth.ErrNonceExpired):
			out.stale = true
		case errors.Is(err, digestauth.ErrURIMismatch):
			out.uriMismatch = true
			out.failure = "uri_mismatch"
		default:
			out.failure = authFailureReason(err)
		}
	}
	return out
}

func authFailureReason(err error) string {
	switch {
	case errors.Is(err, digestauth.ErrUnknownUser):
		return "unknown_user"
	case errors.Is(err, digestauth.ErrWrongResponse):
		return "wrong_response"
	case errors.Is(err, digestauth.ErrNonceReplayed):
		return "replayed"
	case errors.Is(err, digestauth.ErrNonceForged), errors.Is(err, digestauth.ErrNonceMalformed):
		return "bad_nonce"
	case errors.Is(err, digestauth.ErrQOPRequired):
		return "qop_required"
	case errors.Is(err, digestauth.ErrAlgorithmNotOffered):
		return "algorithm_not_offered"
	}
	return "malformed"
}

// ownAOR reports whether the authenticated user may speak for the AOR uri
// names: the same user at a domain we serve. Users are not kept per domain,
// so any of our domains will do; a foreign one never does.
func (s *Server) ownAOR(uri sip.Uri, user string) bool {
	return uriUser(uri) == user && s.self.isLocalDomain(uri.Host)
}

// challengeHeaders returns one challenge per offered algorithm, preferred
// first (RFC 8760 section 2.4).
func (a *authenticator) challengeHeaders(proxy, stale bool) []sip.Header {
	name := "WWW-Authenticate"
	if proxy {
		name = "Proxy-Authenticate"
	}
	hdrs := make([]sip.Header, 0, len(a.algorithms))
	for _, alg := range a.algorithms {
		hdrs = append(hdrs, sip.NewHeader(name, a.verifier.Challenge(alg, stale)))
	}
	return hdrs
}
