package bus

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig sets up the in-process NATS server that gives a zero-config
// local stack (and tests) a real bus with JetStream.
type EmbeddedConfig struct {
	// Host to listen on; default 127.0.0.1.
	Host string `yaml:"host"`
	// Port to listen on; -1 picks a free one. Default 4222.
	Port int `yaml:"port"`
	// StoreDir keeps JetStream data; empty uses a fresh temporary directory,
	// removed at shutdown.
	StoreDir string `yaml:"store_dir"`
}

// DefaultEmbeddedPort is the port the embedded server listens on when none
// is configured: the standard NATS client port, so tools like the nats CLI
// work against a local stack unchanged.
const DefaultEmbeddedPort = 4222

// embeddedReadyTimeout bounds how long StartEmbedded waits for the server
// to accept connections.
const embeddedReadyTimeout = 10 * time.Second

// EmbeddedServer is a running in-process NATS server.
type EmbeddedServer struct {
	srv     *server.Server
	tempDir string // the store StartEmbedded made, removed at Shutdown
}

// StartEmbedded starts a NATS server with JetStream in this process.
func StartEmbedded(cfg EmbeddedConfig) (*EmbeddedServer, error) {
	opts := &server.Options{
		ServerName: "callgrid-embedded",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = DefaultEmbeddedPort
	}
	e := &EmbeddedServer{}
	if opts.StoreDir == "" {
		// Left empty, nats-server uses one fixed directory under /tmp for
		// every server on the host, kept across runs: two local servers
		// would write the same files, and a new run would load the last
		// one's buckets (stale registrations and call records).
		dir, err := os.MkdirTemp("", "callgrid-nats-")
		if err != nil {
			return nil, fmt.Errorf("create embedded nats store: %w", err)
		}
		opts.StoreDir, e.tempDir = dir, dir
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		e.removeTempDir()
		return nil, fmt.Errorf("create embedded nats server: %w", err)
	}
	e.srv = srv
	go srv.Start()
	if !srv.ReadyForConnections(embeddedReadyTimeout) {
		e.Shutdown()
		return nil, fmt.Errorf("embedded nats server on %s:%d not ready after %s", opts.Host, opts.Port, embeddedReadyTimeout)
	}
	return e, nil
}

// URL is the client URL of the server.
func (e *EmbeddedServer) URL() string { return e.srv.ClientURL() }

// Port is the port the server listens on (useful when it was picked).
func (e *EmbeddedServer) Port() int {
	if addr, ok := e.srv.Addr().(*net.TCPAddr); ok {
		return addr.Port
	}
	return 0
}

// Shutdown stops the server and waits until it has stopped.
func (e *EmbeddedServer) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.removeTempDir()
}

func (e *EmbeddedServer) removeTempDir() {
	if e.tempDir != "" {
		_ = os.RemoveAll(e.tempDir)
	}
}
