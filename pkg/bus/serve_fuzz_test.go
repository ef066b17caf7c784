package bus

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

func offlineClient() *Client {
	return &Client{log: zerolog.Nop(), metrics: newMetrics(prometheus.NewRegistry())}
}

// FuzzDispatch feeds arbitrary payloads to the request decoder: whatever
// arrives, the handler runs only on a decoded request and a reply with an
// explicit status comes back.
func FuzzDispatch(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff})
	f.Add(must(proto.Marshal(&callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0"), SessionId: "s"})))
	f.Add(must(proto.Marshal(&callgridv1.DeleteRequest{SessionId: "x", Cause: "bye"})))
	c := offlineClient()
	status, detail, err := replyFields(&callgridv1.OfferReply{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		handled := false
		reply := dispatch(context.Background(), c, "offer", data, func(_ context.Context, req *callgridv1.OfferRequest) *callgridv1.OfferReply {
			handled = true
			return &callgridv1.OfferReply{Status: callgridv1.Status_STATUS_OK, SessionId: req.GetSessionId()}
		}, status, detail)
		decodes := proto.Unmarshal(data, new(callgridv1.OfferRequest)) == nil
		switch {
		case decodes && (!handled || reply.GetStatus() != callgridv1.Status_STATUS_OK):
			t.Fatalf("decodable payload got %s", reply.GetStatus())
		case !decodes && (handled || reply.GetStatus() != callgridv1.Status_STATUS_BAD_REQUEST || reply.GetDetail() == ""):
			t.Fatalf("undecodable payload got %s (handled %v)", reply.GetStatus(), handled)
		}
	})
}

func TestDispatchCountsBadPayloadsAndNilReplies(t *testing.T) {
	c := offlineClient()
	status, detail, err := replyFields(&callgridv1.DeleteReply{})
	if err != nil {
		t.Fatal(err)
	}
	nilHandler := func(context.Context, *callgridv1.DeleteRequest) *callgridv1.DeleteReply { return nil }
	if r := dispatch(context.Background(), c, "delete", []byte{0x0a, 0xff}, nilHandler, status, detail); r.GetStatus() != callgridv1.Status_STATUS_BAD_REQUEST {
		t.Fatalf("bad payload: %s", r.GetStatus())
	}
	if r := dispatch(context.Background(), c, "delete", nil, nilHandler, status, detail); r.GetStatus() != callgridv1.Status_STATUS_INTERNAL {
		t.Fatalf("nil reply: %s", r.GetStatus())
	}
	if got := testutil.ToFloat64(c.metrics.badPayloads.WithLabelValues("delete")); got != 1 {
		t.Fatalf("bad payloads counted %v, want 1", got)
	}
}

func TestReplyTypesMustCarryStatus(t *testing.T) {
	if _, _, err := replyFields(&callgridv1.NodeStatus{}); err == nil {
		t.Fatal("a reply type without status was accepted")
	}
	for _, m := range []proto.Message{&callgridv1.OfferReply{}, &callgridv1.AnswerReply{}, &callgridv1.UpdateReply{}, &callgridv1.DeleteReply{}} {
		if _, _, err := replyFields(m); err != nil {
			t.Fatal(err)
		}
	}
}

func TestValidateToken(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{{"media-1", true}, {"a_b", true}, {"", false}, {"a.b", false}, {"a*", false}, {"a>", false}, {"a b", false}} {
		t.Run(tc.in, func(t *testing.T) {
			if err := ValidateToken(tc.in); (err == nil) != tc.ok {
				t.Fatalf("ValidateToken(%q) = %v", tc.in, err)
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
