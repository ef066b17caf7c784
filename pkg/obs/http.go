package obs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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

// NewHTTPServer listens on addr. ready returns nil when the service should
// get traffic, or the reason it should not.
func NewHTTPServer(addr string, gatherer prometheus.Gatherer, ready func() error, log zerolog.Logger) (*HTTPServer, error) {
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
		return fmt.Errorf("http shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	return nil
}
