package bus

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// A handler that panics gets its requester an INTERNAL reply (which the
// proxy takes to the next node) and leaves the process and the
// subscription serving.
func TestServeSurvivesAHandlerPanic(t *testing.T) {
	c, _ := connectTestBus(t, prometheus.NewRegistry())
	const subject = "callgrid.v1.test.panic"
	sub, err := Serve(c, subject, "", "delete", func(_ context.Context, req *callgridv1.DeleteRequest) *callgridv1.DeleteReply {
		if req.GetSessionId() == "boom" {
			var m map[string]int
			m["x"]++ // a nil map write: a bug that bad input reached
		}
		return &callgridv1.DeleteReply{Status: callgridv1.Status_STATUS_OK}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	reply := new(callgridv1.DeleteReply)
	if err := c.Request(ctx, "delete", subject, &callgridv1.DeleteRequest{SessionId: "boom"}, reply); err != nil {
		t.Fatalf("request whose handler panicked: %v", err)
	}
	if reply.GetStatus() != callgridv1.Status_STATUS_INTERNAL || reply.GetDetail() == "" {
		t.Fatalf("panicking handler answered %s %q, want STATUS_INTERNAL with a detail", reply.GetStatus(), reply.GetDetail())
	}
	reply = new(callgridv1.DeleteReply)
	if err := c.Request(ctx, "delete", subject, &callgridv1.DeleteRequest{SessionId: "fine"}, reply); err != nil || reply.GetStatus() != callgridv1.Status_STATUS_OK {
		t.Fatalf("request after the panic: %v, %s", err, reply.GetStatus())
	}
	if got := testutil.ToFloat64(c.metrics.handlerPanics.WithLabelValues("delete")); got != 1 {
		t.Fatalf("handler panics counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(c.metrics.served.WithLabelValues("delete", "STATUS_INTERNAL")); got != 1 {
		t.Fatalf("served STATUS_INTERNAL counted %v, want 1", got)
	}
}

// A refusal whose detail quotes the requester's bytes (an SDP line that is
// not UTF-8, as the SDP parser reports it) still reaches the requester
// with its status, rather than no reply at all and a timeout.
func TestServeRepliesWhenTheDetailIsNotUTF8(t *testing.T) {
	c, _ := connectTestBus(t, prometheus.NewRegistry())
	const subject = "callgrid.v1.test.badsdp"
	sub, err := Serve(c, subject, "", "offer", func(_ context.Context, req *callgridv1.OfferRequest) *callgridv1.OfferReply {
		return &callgridv1.OfferReply{Status: callgridv1.Status_STATUS_BAD_SDP, Detail: "bad sdp: " + string(req.GetSdp())}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	reply := new(callgridv1.OfferReply)
	err = c.Request(ctx, "offer", subject, &callgridv1.OfferRequest{CallId: "c1", Sdp: []byte("a=rtcp:4001 \xff\xfe")}, reply)
	if err != nil {
		t.Fatalf("offer with a non-UTF-8 sdp line: %v", err)
	}
	if reply.GetStatus() != callgridv1.Status_STATUS_BAD_SDP || !utf8.ValidString(reply.GetDetail()) || !strings.Contains(reply.GetDetail(), "a=rtcp:4001") {
		t.Fatalf("reply %s %q, want STATUS_BAD_SDP quoting the line", reply.GetStatus(), reply.GetDetail())
	}
}

// gatedHandler serves delete requests, holding the first until release
// closes; calls counts the requests it was handed.
type gatedHandler struct {
	entered chan struct{}
	release chan struct{}
	calls   atomic.Int32
	running atomic.Int32
}

func newGatedHandler() *gatedHandler {
	return &gatedHandler{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedHandler) handle(_ context.Context, req *callgridv1.DeleteRequest) *callgridv1.DeleteReply {
	g.running.Add(1)
	defer g.running.Add(-1)
	if g.calls.Add(1) == 1 {
		close(g.entered)
		<-g.release
	}
	return &callgridv1.DeleteReply{Status: callgridv1.Status_STATUS_OK, Detail: req.GetSessionId()}
}

// sendRaw publishes a request for id on subject and returns the
// subscription its reply comes to.
func sendRaw(t *testing.T, c *Client, subject, id string) *nats.Subscription {
	t.Helper()
	inbox := nats.NewInbox()
	replies, err := c.Conn().SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = replies.Unsubscribe() })
	data, err := proto.Marshal(&callgridv1.DeleteRequest{SessionId: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Conn().PublishRequest(subject, inbox, data); err != nil {
		t.Fatal(err)
	}
	return replies
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// Draining stops new requests at once (they find no responder) and answers
// every request already received, one in its handler and those queued
// behind it, before it reports the subscription done.
func TestDrainAnswersRequestsAlreadyReceived(t *testing.T) {
	c, _ := connectTestBus(t, prometheus.NewRegistry())
	const subject = "callgrid.v1.test.drain"
	g := newGatedHandler()
	sub, err := Serve(c, subject, "", "delete", g.handle)
	if err != nil {
		t.Fatal(err)
	}
	inFlight := sendRaw(t, c, subject, "in-flight")
	waitClosed(t, g.entered, "the first request in its handler")
	queued := []*nats.Subscription{sendRaw(t, c, subject, "queued-1"), sendRaw(t, c, subject, "queued-2")}
	// The server has routed them to the subscription before the drain
	// begins: they are received, not new.
	if err := c.Conn().Flush(); err != nil {
		t.Fatal(err)
	}

	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- Drain(ctx, sub)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Short: a probe sent before the drain began queues too.
		probe, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := c.Request(probe, "delete", subject, &callgridv1.DeleteRequest{SessionId: "new"}, new(callgridv1.DeleteReply))
		cancel()
		if errors.Is(err, ErrNoResponders) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a request after the drain began: %v, want no responders", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(g.release)

	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not return once the handler did")
	}
	if n := g.running.Load(); n != 0 {
		t.Fatalf("drain returned with %d handlers running", n)
	}
	for i, replies := range append([]*nats.Subscription{inFlight}, queued...) {
		msg, err := replies.NextMsg(2 * time.Second)
		if err != nil {
			t.Fatalf("request %d got no reply: %v", i, err)
		}
		reply := new(callgridv1.DeleteReply)
		if err := proto.Unmarshal(msg.Data, reply); err != nil || reply.GetStatus() != callgridv1.Status_STATUS_OK {
			t.Fatalf("request %d: reply %v, %v", i, reply, err)
		}
	}
}

// A drain waits no longer than its context: a handler that never returns
// does not hold the caller, and what is still queued is dropped rather
// than handled after the caller has moved on.
func TestDrainGivesUpWhenItsContextEnds(t *testing.T) {
	c, _ := connectTestBus(t, prometheus.NewRegistry())
	const subject = "callgrid.v1.test.stuck"
	g := newGatedHandler()
	sub, err := Serve(c, subject, "", "delete", g.handle)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			close(g.release)
		}
	})
	inFlight := sendRaw(t, c, subject, "stuck")
	waitClosed(t, g.entered, "the first request in its handler")
	sendRaw(t, c, subject, "queued")
	if err := c.Conn().Flush(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = Drain(ctx, sub)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("drain of a stuck handler: %v, want the deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("drain took %s with a 200ms context", took)
	}
	if sub.IsValid() {
		t.Fatal("the subscription still serves after the drain gave up")
	}
	close(g.release)
	released = true
	if _, err := inFlight.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("the request in hand got no reply once its handler returned: %v", err)
	}
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("%d requests handled, want only the one in hand", n)
	}
}
