package app

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
)

// lockedBuffer collects log lines written from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// duplicateKey returns a top-level key that appears twice in one JSON log
// line, or "".
func duplicateKey(t *testing.T, line string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("log line is not a JSON object: %q", line)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		key := tok.(string)
		if seen[key] {
			return key
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
	}
	return ""
}

// Every line a node logs names each field once: node_id included, which
// the wiring and the control layer both want on their lines.
func TestRunLogsEachFieldOnce(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cfg := Defaults()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Bus.URL = srv.URL()
	cfg.Node.ID = "media-logs"
	cfg.Node.HeartbeatInterval = heartbeat
	cfg.RTP.PortMin, cfg.RTP.PortMax = 23600, 23699
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	log := zerolog.New(out).With().Str("service", "media").Logger()
	drain, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(drain, make(chan struct{}), cfg, log, prometheus.NewRegistry()) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "media node serving") {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("node never said it was serving; logged:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for _, line := range lines {
		if key := duplicateKey(t, line); key != "" {
			t.Errorf("field %q logged twice: %s", key, line)
		}
		if !strings.Contains(line, `"node_id":"media-logs"`) {
			t.Errorf("line without node_id: %s", line)
		}
	}
}
