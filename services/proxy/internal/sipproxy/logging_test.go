package sipproxy

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// What sipgo logs reaches our logger at the level it chose, except the
// records an outsider can cause at will or that say nothing an operator
// can act on, which come down to debug.
func TestSipgoLogsDemotedOrKept(t *testing.T) {
	cases := []struct {
		name, msg string
		level     slog.Level
		want      string // the level logged; "" for nothing at info
	}{
		{name: "unparsable datagram", msg: "failed to parse", level: slog.LevelError},
		{name: "udp reference count", msg: "UDP ref went negative on try close", level: slog.LevelWarn},
		{name: "tcp reference count", msg: "TCP ref went negative", level: slog.LevelWarn},
		{name: "anything else", msg: "connection closed unexpectedly", level: slog.LevelWarn, want: "warn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			log := newSipgoLogger(zerolog.New(&out).Level(zerolog.InfoLevel), func() {})
			r := slog.NewRecord(time.Now(), tc.level, tc.msg, 0)
			if err := log.Handler().Handle(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			got := out.String()
			if tc.want == "" && got != "" {
				t.Fatalf("logged at info: %s", got)
			}
			if tc.want != "" && !strings.Contains(got, `"level":"`+tc.want+`"`) {
				t.Fatalf("logged %q, want level %s", got, tc.want)
			}
		})
	}
}
