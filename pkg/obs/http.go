package obs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// shutdownTimeout bounds the HTTP server's graceful stop.
const shutdownTimeout = 2 * time.Second

// HTTPServer serves /metrics, /healthz and /livez (the process is alive) and
// /readyz (it should get traffic). Liveness stays true while a service
// drains, readiness does not: an orchestrator must not kill a draining pod
// for being unready.
type HTTPServer struct {
	srv      *http.Server
	listener net.Listener
	log      zerolog.Logger
}

// CheckListenAddr reports whether addr can be given to NewHTTPServer:
// host:port with a numeric port, where the host is an IP address, a name,
// or empty for every interface (":9102", the usual way to write it).
// Service names and an empty port are refused although net.Listen takes
// them: the first depends on the machine's services database, the second
// picks a random port no probe or scrape would find.
func CheckListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q is not a number within 0-65535", addr, port)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !isHostName(host) {
		return fmt.Errorf("%q: %q is neither an IP address nor a host name", addr, host)
	}
	return nil
}

// isHostName reports whether s is made of DNS labels: letters, digits and
// inner hyphens, dot separated. Underscores pass too: container runtimes
// resolve names such as callgrid_proxy_1.
func isHostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// NewHTTPServer listens on addr. ready returns nil when the service should
// get traffic, or the reason it should not.
func NewHTTPServer(addr string, gatherer prometheus.Gatherer, ready func() error, log zerolog.Logger) (*HTTPServer, error) {
	// Both are only called on a request: refused here, rather than a
	// panic on the first scrape or probe.
	if gatherer == nil || ready == nil {
		return nil, errors.New("http server: a gatherer and a readiness check are required")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen http on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	alive := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }
	mux.HandleFunc("GET /healthz", alive)
	mux.HandleFunc("GET /livez", alive)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return &HTTPServer{
		srv:      &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		listener: ln,
		log:      log,
	}, nil
}

// Addr is the address the server listens on.
func (s *HTTPServer) Addr() string { return s.listener.Addr().String() }

// Run serves until ctx ends.
func (s *HTTPServer) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.listener) }()
	s.log.Info().Str("addr", s.Addr()).Msg("http serving metrics and health")
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		// Shutdown leaves connections still busy past the bound open (a
		// scrape stuck in a collector, say); the server must not outlive
		// Run.
		_ = s.srv.Close()
		<-errc
		return fmt.Errorf("http shutdown: %w; remaining connections closed", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	return nil
}
