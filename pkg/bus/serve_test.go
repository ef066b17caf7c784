package bus

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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
