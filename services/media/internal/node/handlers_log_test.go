package node

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// logBuffer collects log lines written from many goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

// logFields returns a JSON log line's top-level keys in order, repeats
// included, and its message.
func logFields(t *testing.T, line string) (keys []string, message string) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("log line is not a JSON object: %q", line)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		key := tok.(string)
		keys = append(keys, key)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if key == zerolog.MessageFieldName {
			_ = json.Unmarshal(value, &message)
		}
	}
	return keys, message
}

// The lines a node logs about calls name each field once, with the
// logger it is given carrying the process's own fields ("service" among
// them), and name the call by call_id. Log stores that reject duplicate
// keys (Elasticsearch) would otherwise drop them.
func TestCallLinesLogEachFieldOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &logBuffer{}
		log := zerolog.New(out).Level(zerolog.DebugLevel).With().Str("service", "media").Logger()
		media := newFakeMedia()
		n, err := New(Config{ID: "n", CapacityUnits: 100}, log, prometheus.NewRegistry(), nil, media)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		offer := func(callID string, service callgridv1.MediaService) string {
			t.Helper()
			r := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: callID, Sdp: []byte("v=0"), Service: service})
			if r.GetStatus() != callgridv1.Status_STATUS_OK {
				t.Fatalf("offer %s: %v", callID, r.GetStatus())
			}
			return r.GetSessionId()
		}
		answer := func(id string) {
			t.Helper()
			if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: id, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
				t.Fatalf("answer %s: %v", id, st)
			}
		}

		bridged := offer("call-bridged", callgridv1.MediaService_MEDIA_SERVICE_BRIDGE)
		offer("call-tone", callgridv1.MediaService_MEDIA_SERVICE_TONE)
		media.mu.Lock()
		media.failOpen = ErrBadSDP
		media.mu.Unlock()
		if st := n.handleOffer(ctx, offerReq("call-refused")).GetStatus(); st != callgridv1.Status_STATUS_BAD_SDP {
			t.Fatalf("refused offer: %v", st)
		}
		media.mu.Lock()
		media.failOpen, media.updateTranscodes = nil, true
		media.mu.Unlock()
		answer(bridged)
		if st := n.handleUpdate(ctx, &callgridv1.UpdateRequest{SessionId: bridged, Leg: callgridv1.Leg_LEG_A, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
			t.Fatalf("update: %v", st)
		}
		n.HandleTranscodingChange(bridged, false)
		n.handleDelete(ctx, &callgridv1.DeleteRequest{SessionId: bridged, Cause: "bye"})

		silent := offer("call-silent", callgridv1.MediaService_MEDIA_SERVICE_BRIDGE)
		answer(silent)
		n.HandleMediaTimeout(silent, &callgridv1.MediaQuality{})

		// The engine has lost the session: closing it fails.
		lost := offer("call-lost", callgridv1.MediaService_MEDIA_SERVICE_BRIDGE)
		media.mu.Lock()
		delete(media.open, lost)
		media.mu.Unlock()
		n.handleDelete(ctx, &callgridv1.DeleteRequest{SessionId: lost, Cause: "cancel"})

		unanswered := offer("call-unanswered", callgridv1.MediaService_MEDIA_SERVICE_BRIDGE)
		reapCtx, stopReaping := context.WithCancel(ctx)
		reaped := make(chan struct{})
		go func() { defer close(reaped); n.reapUnanswered(reapCtx) }()
		time.Sleep(DefaultSetupTimeout + time.Minute)
		stopReaping()
		<-reaped
		if _, ok := n.ledger.lookup(unanswered); ok {
			t.Fatal("the unanswered session was not reaped")
		}

		n.Drain()
		n.closeAll("shutdown")

		want := map[string]bool{
			"session opened": false, "offer refused": false, "update changed transcoding": false,
			"transcoding changed": false, "session ended": false, "media timeout": false,
			"close session media": false, "session never answered: ended": false,
		}
		for _, line := range out.lines() {
			keys, message := logFields(t, line)
			if _, ok := want[message]; ok {
				want[message] = true
			}
			seen := map[string]bool{}
			for _, key := range keys {
				if seen[key] {
					t.Errorf("field %q logged twice: %s", key, line)
				}
				seen[key] = true
			}
			if seen["session_id"] && !seen["call_id"] {
				t.Errorf("call line without call_id: %s", line)
			}
			if !seen["node_id"] {
				t.Errorf("line without node_id: %s", line)
			}
		}
		for message, logged := range want {
			if !logged {
				t.Errorf("no %q line to check", message)
			}
		}
	})
}
