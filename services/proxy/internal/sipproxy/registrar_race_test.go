package sipproxy

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"callgrid.dev/services/proxy/internal/location"
)

// raceReplicas starts the proxies a REGISTER burst goes through: two
// replicas on one NATS bucket, or one with the in-memory store.
func raceReplicas(t *testing.T, kv bool, maxContacts int) []*runningProxy {
	t.Helper()
	base := func() Config {
		cfg := testConfig()
		cfg.Auth = authConfig("bob")
		cfg.Auth.NonceSecret = "shared-between-replicas"
		cfg.Registrar.MaxContacts = maxContacts
		cfg.Transports = []string{"udp"}
		return cfg
	}
	if !kv {
		return []*runningProxy{startProxy(t, base())}
	}
	url := startNATS(t)
	var out []*runningProxy
	for range 2 {
		cfg := base()
		cfg.ListenAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freeUDPPort(t)))
		out = append(out, startProxy(t, cfg, WithLocationStore(kvLocation(t, url))))
	}
	return out
}

// authorizedRegister sends req once to be challenged and returns it ready
// to send again with credentials and the given CSeq, so that a burst of
// them can leave at once, past authentication.
func authorizedRegister(t *testing.T, p *peer, proxyAddr string, req *sip.Request, seq uint32) *sip.Request {
	t.Helper()
	res := p.do(t, proxyAddr, req)
	h := res.GetHeader("WWW-Authenticate")
	if res.StatusCode != sip.StatusUnauthorized || h == nil {
		t.Fatalf("challenge: %d", res.StatusCode)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: req.Recipient.Addr(), Username: "bob", Password: testPassword, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	req.RemoveHeader("Via")
	req.AppendHeader(sip.NewHeader("Authorization", cred.String()))
	req.CSeq().SeqNo = seq
	req.SetDestination(proxyAddr)
	return req
}

// burst sends every request at once, each to its own destination, and
// returns the final statuses in order.
func burst(t *testing.T, p *peer, reqs []*sip.Request) []int {
	t.Helper()
	codes := make([]int, len(reqs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, req := range reqs {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := p.cli.Do(ctx, req)
			if err != nil {
				t.Errorf("register %d: %v", i, err)
				return
			}
			codes[i] = res.StatusCode
		})
	}
	close(start)
	wg.Wait()
	t.Logf("statuses of the burst: %v", codes)
	return codes
}

// converged waits until every replica holds the same bindings of bob and
// returns them.
func converged(t *testing.T, proxies []*runningProxy) []string {
	t.Helper()
	var got []string
	waitFor(t, "replicas agreeing on bob's bindings", func() bool {
		var first string
		for i, p := range proxies {
			bs, err := p.loc.Lookup(context.Background(), "bob@localhost")
			if err != nil {
				return false
			}
			view := fmt.Sprint(bindingSummary(bs))
			if i == 0 {
				first, got = view, bindingSummary(bs)
			} else if view != first {
				return false
			}
		}
		return true
	})
	return got
}

// bindingSummary is what the checks compare of each binding.
func bindingSummary(bs []location.Binding) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = fmt.Sprintf("cseq=%d %s", b.CSeq, b.Contact)
	}
	return out
}

// TestConcurrentRegistersKeepTheRules: REGISTERs for one AOR arriving at
// once, through two replicas sharing the bus or through one replica, must
// leave what some serial order of them would (RFC 3261 10.3): never more
// contacts than max_contacts, and a binding's CSeq only ever rising.
func TestConcurrentRegistersKeepTheRules(t *testing.T) {
	const registers, maxContacts = 24, 3
	for _, kv := range []bool{true, false} {
		name := "one replica in memory"
		if kv {
			name = "two replicas on nats"
		}
		t.Run(name+"/phones adding contacts", func(t *testing.T) {
			proxies := raceReplicas(t, kv, maxContacts)
			phone := newPeer(t, "phone")
			reqs := make([]*sip.Request, registers)
			for i := range reqs {
				req := phone.registerReq("bob", 600)
				req.RemoveHeader("Contact")
				req.AppendHeader(phone.contact("bob", strconv.Itoa(i), 600))
				to := proxies[i%len(proxies)].Addr("udp")
				reqs[i] = authorizedRegister(t, phone, to, req, 2)
			}
			codes := burst(t, phone, reqs)
			ok := 0
			for i, code := range codes {
				switch code {
				case sip.StatusOK:
					ok++
				case sip.StatusInternalServerError:
					// Lost every compare-and-set: allowed, with Retry-After.
				default:
					t.Errorf("register %d: status %d", i, code)
				}
			}
			got := converged(t, proxies)
			if len(got) > maxContacts {
				t.Fatalf("%d contacts bound, max_contacts is %d: %v", len(got), maxContacts, got)
			}
			if want := min(ok, maxContacts); len(got) != want {
				t.Fatalf("%d REGISTERs succeeded but %d contacts bound, want %d: %v", ok, len(got), want, got)
			}
		})
		t.Run(name+"/one phone refreshing", func(t *testing.T) {
			proxies := raceReplicas(t, kv, maxContacts)
			phone := newPeer(t, "phone")
			callID := sip.CallIDHeader("refresh-race@test")
			reqs := make([]*sip.Request, registers)
			for i := range reqs {
				req := phone.registerReq("bob", 600)
				req.AppendHeader(&callID)
				to := proxies[i%len(proxies)].Addr("udp")
				// Each REGISTER's CSeq is its own; the challenge used another.
				reqs[i] = authorizedRegister(t, phone, to, req, uint32(100+i))
			}
			codes := burst(t, phone, reqs)
			var highest uint32
			for i, code := range codes {
				switch code {
				case sip.StatusOK:
					highest = max(highest, uint32(100+i))
				case sip.StatusBadRequest, sip.StatusInternalServerError:
					// Overtaken by a newer one (400), or lost every
					// compare-and-set (500).
				default:
					t.Errorf("register %d: status %d", i, code)
				}
			}
			if highest == 0 {
				t.Fatal("no REGISTER succeeded")
			}
			got := converged(t, proxies)
			want := fmt.Sprintf("cseq=%d ", highest)
			if len(got) != 1 || !strings.HasPrefix(got[0], want) {
				t.Fatalf("binding %v after the burst, want the newest accepted REGISTER's %s", got, want)
			}
		})
	}
}

// contendedStore is a location store whose updates always lose to others.
type contendedStore struct{ *location.MemoryStore }

func (contendedStore) Update(context.Context, string, location.Change) ([]location.Binding, error) {
	return nil, fmt.Errorf("update after 8 attempts: %w", location.ErrConflict)
}

// A REGISTER that lost every compare-and-set to concurrent ones is refused
// with 500 and Retry-After: nothing was applied, and trying again shortly
// will work (RFC 3261 21.5.1).
func TestRegisterLosingEveryConflictIsRetriedLater(t *testing.T) {
	cfg := testConfig()
	cfg.Auth = authConfig("bob")
	p := startProxy(t, cfg, WithLocationStore(contendedStore{location.NewMemoryStore(nil)}))
	phone := newPeer(t, "phone")
	res := phone.register(t, p.Addr("udp"), phone.registerReq("bob", 600), testPassword)
	if res.StatusCode != sip.StatusInternalServerError {
		t.Fatalf("status %d, want 500", res.StatusCode)
	}
	if h := res.GetHeader("Retry-After"); h == nil || h.Value() != "1" {
		t.Fatalf("Retry-After %v, want 1", h)
	}
}
