package e2e

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// messageRequest builds an out-of-dialog MESSAGE with text to
// user@localhost through proxy.
func (p *phone) messageRequest(proxy, to, text string) *sip.Request {
	req := sip.NewRequest(sip.MESSAGE, sip.Uri{Scheme: "sip", User: to, Host: "localhost"})
	from := &sip.FromHeader{Address: p.aor(), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: to, Host: "localhost"}, Params: sip.NewParams()})
	req.AppendHeader(sip.NewHeader("Content-Type", "text/plain;charset=UTF-8"))
	req.SetBody([]byte(text))
	p.address(req, proxy)
	return req
}

// sendMessage sends text to user to through proxy and returns the first
// final response and, when that was a digest challenge and password is
// not empty, the final response to the request retried with credentials.
func (p *phone) sendMessage(t *testing.T, proxy, to, text, password string) (first, final *sip.Response) {
	t.Helper()
	ctx := withTimeout(t, 10*time.Second)
	req := p.messageRequest(proxy, to, text)
	first, err := p.cli.Do(ctx, req)
	if err != nil {
		t.Fatalf("message to %s: %v", to, err)
	}
	if first.StatusCode != sip.StatusProxyAuthRequired || password == "" {
		return first, first
	}
	final, err = p.cli.DoDigestAuth(ctx, req, first, sipgo.DigestAuth{Username: p.user.name, Password: password})
	if err != nil {
		t.Fatalf("message to %s with digest: %v", to, err)
	}
	return first, final
}

// checkChallenged asserts res is a 407 carrying a digest challenge of our
// realm.
func checkChallenged(t *testing.T, res *sip.Response) {
	t.Helper()
	if res.StatusCode != sip.StatusProxyAuthRequired {
		t.Fatalf("got %d %s, want 407", res.StatusCode, res.Reason)
	}
	h := res.GetHeader("Proxy-Authenticate")
	if h == nil || !strings.HasPrefix(h.Value(), "Digest ") || !strings.Contains(h.Value(), `realm="callgrid"`) {
		t.Errorf("407 challenge %v, want a digest challenge of realm callgrid", h)
	}
}

// TestMessageRoutedLikeACall is the SMS path: a MESSAGE for a registered
// user, once its sender passed the digest challenge, reaches the user's
// phone with its body intact and the phone's 200 comes back; a MESSAGE
// for a user nobody registered gets 404; an unauthenticated or wrongly
// authenticated MESSAGE from an untrusted source gets 407 and reaches no
// one, registered recipient or not.
func TestMessageRoutedLikeACall(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	recipient := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz)
	recipient.register(t, s.proxy.sipAddr)
	sender := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)
	// Non-ASCII and line breaks, so any re-encoding or trimming shows.
	const text = "Café at 5?\r\nBring the µ-law notes ☕\n"

	t.Run("delivered to a registered user", func(t *testing.T) {
		first, final := sender.sendMessage(t, s.proxy.sipAddr, "bob", text, alice.password)
		checkChallenged(t, first)
		if final.StatusCode != sip.StatusOK {
			t.Fatalf("authenticated message got %d %s, want 200", final.StatusCode, final.Reason)
		}
		if vias := final.GetHeaders("Via"); len(vias) != 1 {
			t.Errorf("200 reached the sender with %d vias, want only its own", len(vias))
		}
		got := receiveWithin(t, "message at bob", recipient.messages, 5*time.Second)
		if !bytes.Equal(got.Body(), []byte(text)) {
			t.Errorf("body arrived as %q, want %q", got.Body(), text)
		}
		if ct := got.ContentType(); ct == nil || ct.Value() != "text/plain;charset=UTF-8" {
			t.Errorf("content-type arrived as %v", ct)
		}
		if got.From().Address.User != alice.name {
			t.Errorf("message from %q, want %q", got.From().Address.User, alice.name)
		}
		if got.CallID().Value() != final.CallID().Value() {
			t.Errorf("message call-id %q, want the sender's %q", got.CallID().Value(), final.CallID().Value())
		}
		if h := got.GetHeader("Proxy-Authorization"); h != nil {
			t.Errorf("the sender's credentials travelled on to the recipient: %v", h)
		}
		if vias := got.GetHeaders("Via"); len(vias) != 2 {
			t.Errorf("message reached bob with %d vias, want the sender's and the proxy's", len(vias))
		}
		select {
		case dup := <-recipient.messages:
			t.Errorf("bob got a second message: %s", dup.StartLine())
		case <-time.After(200 * time.Millisecond):
		}
	})

	t.Run("unregistered user", func(t *testing.T) {
		_, final := sender.sendMessage(t, s.proxy.sipAddr, "carol", text, alice.password)
		if final.StatusCode != sip.StatusNotFound {
			t.Fatalf("message to unregistered carol got %d %s, want 404", final.StatusCode, final.Reason)
		}
	})

	// Both recipients get the same challenge: an unauthenticated sender
	// learns nothing about who is registered.
	untrusted := []struct {
		name, to, password string
	}{
		{name: "unauthenticated to a registered user", to: "bob"},
		{name: "unauthenticated to an unregistered user", to: "carol"},
		{name: "wrong password", to: "bob", password: "not-" + alice.password},
	}
	for _, tc := range untrusted {
		t.Run(tc.name, func(t *testing.T) {
			_, final := sender.sendMessage(t, s.proxy.sipAddr, tc.to, text, tc.password)
			checkChallenged(t, final)
			select {
			case got := <-recipient.messages:
				t.Errorf("an unauthenticated message reached bob: %s", got.StartLine())
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
	if got := scrape(t, s.proxy.httpURL, "sip_proxy_auth_failures_total"); got != 1 {
		t.Errorf("proxy counted %v auth failures, want 1 (the wrong password)", got)
	}
}
