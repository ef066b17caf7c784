package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// claimed remembers where a session landed.
type claimed struct{ node, session string }

func TestConcurrentClaimsNeverExceedCapacity(t *testing.T) {
	tb := startBus(t)
	// Admission, not liveness, is under test: with 100 ms heartbeats, a
	// machine loaded enough (2,000 claims at once under the race detector
	// beside other packages' tests) can let a node's status age past its
	// three heartbeats, and claims find no node in view.
	tb.interval = time.Second
	capacities := map[string]int{"node-a": 334, "node-b": 333, "node-c": 333}
	nodes := map[string]*testNode{}
	for id, units := range capacities {
		nodes[id] = startNode(t, tb, id, units)
	}
	proxies := make([]*testProxy, 4)
	for i := range proxies {
		// Generous: 2,000 claims at once under the race detector on a
		// loaded machine can take seconds each, and an attempt that
		// timed out holds its units until its release, which this test
		// would count as a claim refused for capacity.
		proxies[i] = startProxy(t, tb, fmt.Sprintf("proxy-%d", i), fleet.ClaimConfig{AttemptTimeout: 15 * time.Second})
	}
	for _, p := range proxies {
		eventually(t, 5*time.Second, "every proxy to see three nodes", func() bool { return len(p.view.Nodes()) == 3 })
	}

	const claims = 2000
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		won        []claimed
		noCapacity atomic.Int64
		otherErrs  atomic.Int64
	)
	for i := range claims {
		wg.Go(func() {
			p := proxies[i%len(proxies)]
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			reply, err := p.claimer.Offer(ctx, offerReq(fmt.Sprintf("call-%d", i)))
			switch {
			case err == nil:
				mu.Lock()
				won = append(won, claimed{reply.GetNodeId(), reply.GetSessionId()})
				mu.Unlock()
			case errors.Is(err, fleet.ErrNoMediaCapacity):
				noCapacity.Add(1)
			default:
				otherErrs.Add(1)
				t.Logf("claim %d: %v", i, err)
			}
		})
	}
	wg.Wait()

	if len(won) != 1000 || noCapacity.Load() != 1000 || otherErrs.Load() != 0 {
		t.Fatalf("claims: %d succeeded, %d no capacity, %d other errors; want 1000/1000/0", len(won), noCapacity.Load(), otherErrs.Load())
	}
	perNode := map[string]int{}
	for _, c := range won {
		perNode[c.node]++
	}
	for id, n := range nodes {
		_, maxOpen := n.media.counts()
		if maxOpen > capacities[id] || perNode[id] != capacities[id] {
			t.Errorf("%s: %d claims, engine held at most %d, capacity %d", id, perNode[id], maxOpen, capacities[id])
		}
		if st := n.Status(); int(st.GetCapacityUsed()) != capacities[id] {
			t.Errorf("%s reports %d used, want %d", id, st.GetCapacityUsed(), capacities[id])
		}
	}

	// Release everything through the proxies, as hangups would.
	for i, c := range won {
		p := proxies[i%len(proxies)]
		if _, err := p.claimer.Delete(context.Background(), c.node, &callgridv1.DeleteRequest{SessionId: c.session, Cause: "bye"}); err != nil {
			t.Fatalf("delete %s on %s: %v", c.session, c.node, err)
		}
	}
	for id, n := range nodes {
		if st := n.Status(); st.GetCapacityUsed() != 0 || st.GetActiveSessions() != 0 {
			t.Errorf("%s after deletes: %d used, %d sessions", id, st.GetCapacityUsed(), st.GetActiveSessions())
		}
		if open, _ := n.media.counts(); open != 0 {
			t.Errorf("%s engine still holds %d sessions", id, open)
		}
	}
	// And the fleet sees it: every proxy's view reports zero used.
	for _, p := range proxies {
		eventually(t, 3*time.Second, "views to report an empty fleet", func() bool {
			for _, st := range p.view.Nodes() {
				if st.GetCapacityUsed() != 0 {
					return false
				}
			}
			return true
		})
	}
}

func TestSilentNodeLeavesEveryView(t *testing.T) {
	tb := startBus(t)
	startNode(t, tb, "steady", 10)
	crashing := startNode(t, tb, "crashing", 10)
	proxies := []*testProxy{startProxy(t, tb, "p1", fleet.ClaimConfig{}), startProxy(t, tb, "p2", fleet.ClaimConfig{})}
	for _, p := range proxies {
		eventually(t, 5*time.Second, "both nodes in view", func() bool { return len(p.view.Nodes()) == 2 })
	}
	// A crash: the connection goes with no goodbye, so only the TTL can tell.
	crashing.client.Conn().Close()
	ttl := fleet.TTLHeartbeats * testInterval
	start := time.Now()
	for _, p := range proxies {
		eventually(t, 2*ttl+time.Second, "the silent node to leave the view", func() bool { return !p.view.Has("crashing") })
	}
	gone := time.Since(start)
	// Within its TTL of the last heartbeat (plus one sweep of slack).
	if limit := ttl + 2*testInterval; gone > limit {
		t.Errorf("silent node left the views after %s, want within %s", gone, limit)
	}
	for _, p := range proxies {
		if !p.view.Has("steady") {
			t.Error("the live node left a view")
		}
		select {
		case id := <-p.left:
			if id != "crashing" {
				t.Errorf("leave handler told of %s", id)
			}
		default:
			t.Error("leave handler was not told of the silent node")
		}
	}
}

func TestDrainingNodeTakesNoClaimsButKeepsSessions(t *testing.T) {
	tb := startBus(t)
	draining := startNode(t, tb, "draining", 100)
	other := startNode(t, tb, "other", 100)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{})
	eventually(t, 5*time.Second, "two nodes in view", func() bool { return len(p.view.Nodes()) == 2 })

	// Put sessions on the node that will drain, by asking it directly.
	var held []string
	for i := range 5 {
		reply := new(callgridv1.OfferReply)
		if err := p.client.Request(context.Background(), "offer", bus.MediaSubject("draining", bus.OpOffer), offerReq(fmt.Sprint("held-", i)), reply); err != nil || reply.GetStatus() != callgridv1.Status_STATUS_OK {
			t.Fatalf("offer: %v %v", err, reply)
		}
		held = append(held, reply.GetSessionId())
	}
	draining.Drain()
	eventually(t, 2*time.Second, "the view to see the drain", func() bool {
		for _, st := range p.view.Nodes() {
			if st.GetNodeId() == "draining" {
				return st.GetDraining()
			}
		}
		return false
	})

	for i := range 50 {
		reply, err := p.claimer.Offer(context.Background(), offerReq(fmt.Sprint("new-", i)))
		if err != nil {
			t.Fatalf("claim during drain: %v", err)
		}
		if reply.GetNodeId() != "other" {
			t.Fatalf("claim landed on %s while it drains", reply.GetNodeId())
		}
	}
	// Asked directly, the draining node says so explicitly.
	reply := new(callgridv1.OfferReply)
	if err := p.client.Request(context.Background(), "offer", bus.MediaSubject("draining", bus.OpOffer), offerReq("direct"), reply); err != nil || reply.GetStatus() != callgridv1.Status_STATUS_DRAINING {
		t.Fatalf("direct offer to a draining node: %v %v", err, reply.GetStatus())
	}
	// Its existing sessions keep working.
	for _, id := range held {
		if _, err := p.claimer.Answer(context.Background(), "draining", &callgridv1.AnswerRequest{SessionId: id, Sdp: []byte("v=0")}); err != nil {
			t.Fatalf("answer on draining node: %v", err)
		}
		if _, err := p.claimer.Update(context.Background(), "draining", &callgridv1.UpdateRequest{SessionId: id, Leg: callgridv1.Leg_LEG_A, Sdp: []byte("v=0")}); err != nil {
			t.Fatalf("update on draining node: %v", err)
		}
		if _, err := p.claimer.Delete(context.Background(), "draining", &callgridv1.DeleteRequest{SessionId: id, Cause: "bye"}); err != nil {
			t.Fatalf("delete on draining node: %v", err)
		}
	}
	if open, _ := draining.media.counts(); open != 0 {
		t.Fatalf("draining node still holds %d sessions", open)
	}
	// With its calls gone, a stopping node returns without the grace period.
	draining.cancel()
	select {
	case <-draining.done:
	case <-time.After(2 * time.Second):
		t.Fatal("drained node did not stop once its calls ended")
	}
	_ = other
}

func TestBusRestartFailsFastThenRecovers(t *testing.T) {
	tb := startBus(t)
	startNode(t, tb, "n1", 100)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{})
	eventually(t, 5*time.Second, "node in view", func() bool { return len(p.view.Nodes()) == 1 })
	if _, err := p.claimer.Offer(context.Background(), offerReq("before")); err != nil {
		t.Fatalf("claim before restart: %v", err)
	}

	tb.srv.Shutdown()
	eventually(t, 2*time.Second, "the proxy to notice the bus is gone", func() bool { return !p.client.Connected() })
	for i := range 5 {
		start := time.Now()
		_, err := p.claimer.Offer(context.Background(), offerReq(fmt.Sprint("down-", i)))
		took := time.Since(start)
		if !errors.Is(err, bus.ErrUnavailable) {
			t.Fatalf("claim with the bus down: got %v, want ErrUnavailable", err)
		}
		if took > 100*time.Millisecond {
			t.Fatalf("claim with the bus down took %s; it must fail fast", took)
		}
	}

	tb.restart(t)
	// Wait out a TTL so the view can only know the node from fresh heartbeats.
	time.Sleep(fleet.TTLHeartbeats * testInterval * 2)
	eventually(t, 10*time.Second, "claims to work again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := p.claimer.Offer(ctx, offerReq("after"))
		return err == nil
	})
}

func TestBadPayloadsAndUnknownSessionsGetStatuses(t *testing.T) {
	tb := startBus(t)
	startNode(t, tb, "n1", 10)
	c := connect(t, tb, "raw")
	eventually(t, 5*time.Second, "node serving", func() bool {
		reply := new(callgridv1.DeleteReply)
		err := c.Request(context.Background(), "delete", bus.MediaSubject("n1", bus.OpDelete), &callgridv1.DeleteRequest{SessionId: "nope"}, reply)
		return err == nil
	})

	raw := func(op bus.MediaOp, payload []byte, reply proto.Message) {
		t.Helper()
		msg, err := c.Conn().Request(bus.MediaSubject("n1", op), payload, 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if err := proto.Unmarshal(msg.Data, reply); err != nil {
			t.Fatalf("%s reply: %v", op, err)
		}
	}
	cases := []struct {
		name    string
		op      bus.MediaOp
		payload []byte
		reply   interface {
			proto.Message
			GetStatus() callgridv1.Status
		}
		want callgridv1.Status
	}{
		{"garbage offer", bus.OpOffer, []byte{0xff, 0xff, 0xff}, new(callgridv1.OfferReply), callgridv1.Status_STATUS_BAD_REQUEST},
		{"garbage delete", bus.OpDelete, []byte("\x0a\xff"), new(callgridv1.DeleteReply), callgridv1.Status_STATUS_BAD_REQUEST},
		{"offer without sdp", bus.OpOffer, mustMarshal(&callgridv1.OfferRequest{CallId: "x"}), new(callgridv1.OfferReply), callgridv1.Status_STATUS_BAD_SDP},
		{"offer with a bad session id", bus.OpOffer, mustMarshal(&callgridv1.OfferRequest{CallId: "x", Sdp: []byte("v=0"), SessionId: "a.b*"}), new(callgridv1.OfferReply), callgridv1.Status_STATUS_BAD_REQUEST},
		{"answer unknown session", bus.OpAnswer, mustMarshal(&callgridv1.AnswerRequest{SessionId: "nope", Sdp: []byte("v=0")}), new(callgridv1.AnswerReply), callgridv1.Status_STATUS_UNKNOWN_SESSION},
		{"update unknown session", bus.OpUpdate, mustMarshal(&callgridv1.UpdateRequest{SessionId: "nope", Leg: callgridv1.Leg_LEG_A, Sdp: []byte("v=0")}), new(callgridv1.UpdateReply), callgridv1.Status_STATUS_UNKNOWN_SESSION},
		{"delete unknown session", bus.OpDelete, mustMarshal(&callgridv1.DeleteRequest{SessionId: "nope"}), new(callgridv1.DeleteReply), callgridv1.Status_STATUS_UNKNOWN_SESSION},
		{"empty offer", bus.OpOffer, nil, new(callgridv1.OfferReply), callgridv1.Status_STATUS_BAD_SDP},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw(tc.op, tc.payload, tc.reply)
			if got := tc.reply.GetStatus(); got != tc.want {
				t.Fatalf("status %s, want %s", got, tc.want)
			}
		})
	}
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
