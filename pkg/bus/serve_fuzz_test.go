package bus

import (
	"context"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

func offlineClient() *Client {
	return &Client{log: zerolog.Nop(), metrics: newMetrics(prometheus.NewRegistry())}
}

// FuzzServe feeds arbitrary payloads and deadline headers to what Serve
// runs for each message: whatever arrives, the handler runs only on a
// decoded request, and an encoded reply with an explicit status comes
// back. The handler quotes the requester's SDP in its detail, as the node's
// handlers quote parse errors, so replies that proto3 would refuse to
// encode are covered too.
func FuzzServe(f *testing.F) {
	future := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
	f.Add([]byte{}, "")
	f.Add([]byte{0xff, 0xff}, future)
	f.Add(must(proto.Marshal(&callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0"), SessionId: "s"})), future)
	f.Add(must(proto.Marshal(&callgridv1.OfferRequest{CallId: "c", Sdp: []byte("a=rtcp:1 \xff\xfe")})), "0")
	f.Add(must(proto.Marshal(&callgridv1.DeleteRequest{SessionId: "x", Cause: "bye"})), "-1")
	f.Add(must(proto.Marshal(&callgridv1.OfferRequest{SessionId: "boom"})), "9223372036854775807")
	c := offlineClient()
	status, detail, err := replyFields(&callgridv1.OfferReply{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, deadline string) {
		msg := &nats.Msg{Subject: "callgrid.v1.media.n1.offer", Data: data, Header: nats.Header{}}
		msg.Header.Set(headerDeadline, deadline)
		handled := false
		out := serveMsg(c, "offer", msg, func(_ context.Context, req *callgridv1.OfferRequest) *callgridv1.OfferReply {
			handled = true
			if req.GetSessionId() == "boom" {
				panic("handler bug")
			}
			return &callgridv1.OfferReply{Status: callgridv1.Status_STATUS_OK, SessionId: req.GetSessionId(), Detail: string(req.GetSdp())}
		}, status, detail)
		reply := new(callgridv1.OfferReply)
		if err := proto.Unmarshal(out, reply); err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		req := new(callgridv1.OfferRequest)
		decodes := proto.Unmarshal(data, req) == nil
		want := callgridv1.Status_STATUS_OK
		if req.GetSessionId() == "boom" {
			want = callgridv1.Status_STATUS_INTERNAL
		}
		switch {
		case decodes && (!handled || reply.GetStatus() != want):
			t.Fatalf("decodable payload got %s, want %s", reply.GetStatus(), want)
		case decodes && want == callgridv1.Status_STATUS_OK && utf8.Valid(req.GetSdp()) && reply.GetDetail() != string(req.GetSdp()):
			t.Fatalf("valid detail changed to %q", reply.GetDetail())
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
