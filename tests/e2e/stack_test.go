package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// heartbeat is the media nodes' heartbeat in these tests: short, so a
// killed node leaves the fleet within a second.
const heartbeat = 200 * time.Millisecond

// natsServer is an embedded NATS with JetStream that a test can restart on
// the same port and store.
type natsServer struct {
	t     *testing.T
	port  int
	store string
	mu    sync.Mutex
	srv   *server.Server
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	n := &natsServer{t: t, port: freeTCPPort(t), store: t.TempDir()}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) start() {
	n.t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: n.port, JetStream: true, StoreDir: n.store, NoLog: true, NoSigs: true,
	})
	if err != nil {
		n.t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		n.t.Fatal("nats not ready")
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
}

func (n *natsServer) stop() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// events subscribes to call-ended events.
func (n *natsServer) callEnded(t *testing.T) <-chan *callgridv1.CallEnded {
	t.Helper()
	nc, err := nats.Connect(n.url(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ch := make(chan *callgridv1.CallEnded, 64)
	if _, err := nc.Subscribe(bus.SubjectCallEnded, func(m *nats.Msg) {
		ev := new(callgridv1.CallEnded)
		if proto.Unmarshal(m.Data, ev) == nil {
			select {
			case ch <- ev:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

// callIDsOn collects the call ids of the call events published on subject
// (CallStarted and CallAnswered carry call_id as field 1, like CallEnded).
func (n *natsServer) callIDsOn(t *testing.T, subject string) <-chan string {
	t.Helper()
	nc, err := nats.Connect(n.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ch := make(chan string, 64)
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		ev := new(callgridv1.CallStarted)
		if proto.Unmarshal(m.Data, ev) == nil {
			select {
			case ch <- ev.GetCallId():
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

// process is a running binary whose output is kept for failure reports.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

func startProcess(t *testing.T, name, bin string, env []string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM, 5*time.Second)
		if t.Failed() {
			t.Logf("--- %s log (tail) ---\n%s", name, tailFile(logPath, 6000))
		}
		_ = f.Close()
	})
	return p
}

// stop signals the process and waits, killing it after grace.
func (p *process) stop(sig syscall.Signal, grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process at once (SIGKILL), as a crash would.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// tailFile is the end of a process log without sipgo's transaction
// chatter, which would push everything useful out of the tail.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var kept []byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if bytes.Contains(line, []byte(`"level":"debug"`)) && bytes.Contains(line, []byte(`"component":"sipgo"`)) {
			continue
		}
		kept = append(kept, line...)
	}
	if len(kept) > n {
		kept = kept[len(kept)-n:]
	}
	return string(kept)
}

// mediaNode is a running media binary.
type mediaNode struct {
	*process
	id      string
	httpURL string
}

type mediaOpts struct {
	capacity     int
	mediaTimeout time.Duration
}

func startMedia(t *testing.T, nats *natsServer, id string, o mediaOpts) *mediaNode {
	t.Helper()
	portMin := freeUDPRange(t, 40)
	httpAddr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	env := []string{
		"NATS_URL=" + nats.url(),
		"MEDIA_NODE_ID=" + id,
		"MEDIA_HTTP_ADDR=" + httpAddr,
		"MEDIA_RTP_PORT_MIN=" + strconv.Itoa(portMin),
		"MEDIA_RTP_PORT_MAX=" + strconv.Itoa(portMin+39),
		"MEDIA_NODE_HEARTBEAT_INTERVAL=" + heartbeat.String(),
		"MEDIA_LOG_LEVEL=debug",
	}
	if o.capacity > 0 {
		env = append(env, "MEDIA_NODE_CAPACITY_UNITS="+strconv.Itoa(o.capacity))
	}
	if o.mediaTimeout > 0 {
		env = append(env, "MEDIA_RTP_MEDIA_TIMEOUT="+o.mediaTimeout.String())
	}
	n := &mediaNode{process: startProcess(t, id, "media", env), id: id, httpURL: "http://" + httpAddr}
	waitFor(t, 15*time.Second, id+" ready", func() bool { return httpOK(n.httpURL + "/readyz") })
	return n
}

// gauge reads one unlabelled series from the node's /metrics.
func (n *mediaNode) gauge(t *testing.T, name string) float64 {
	t.Helper()
	return scrape(t, n.httpURL, name)
}

// waitIdle waits until the node holds no session and no port.
func (n *mediaNode) waitIdle(t *testing.T) {
	t.Helper()
	waitFor(t, 10*time.Second, n.id+" idle", func() bool {
		return n.gauge(t, "callgrid_media_sessions_active") == 0 && n.gauge(t, "media_port_pairs_in_use") == 0
	})
}

// proxyNode is a running proxy binary.
type proxyNode struct {
	*process
	sipAddr string
	httpURL string
}

// user is a subscriber of the test proxies.
type user struct{ name, password string }

var (
	alice = user{"alice", "alice-secret"}
	bob   = user{"bob", "bob-secret"}
	carol = user{"carol", "carol-secret"}
	dave  = user{"dave", "dave-secret"}
	users = []user{alice, bob, carol, dave}
)

type proxyOpts struct {
	// port is the SIP port (0: a free one).
	port int
	// aliases are the other replicas' addresses.
	aliases []string
	// extra is YAML appended under sip: (dialplan, gateway_groups, ...).
	extra string
	// media is YAML appended under media:.
	media string
	// nodes is how many media nodes the proxy must see before use.
	nodes int
	// inviteTimeout is the proxy's Timer C (0: 3 s).
	inviteTimeout time.Duration
	// tcp serves TCP besides UDP.
	tcp bool
}

func startProxy(t *testing.T, nats *natsServer, name string, o proxyOpts) *proxyNode {
	t.Helper()
	if o.port == 0 {
		o.port = freeSIPPort(t)
	}
	if o.inviteTimeout == 0 {
		o.inviteTimeout = 3 * time.Second
	}
	sipAddr := "127.0.0.1:" + strconv.Itoa(o.port)
	httpAddr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	var subscribers strings.Builder
	for _, u := range users {
		fmt.Fprintf(&subscribers, "      - username: %s\n        ha1_md5: %s\n", u.name, ha1(u))
	}
	var aliases string
	if len(o.aliases) > 0 {
		aliases = "  aliases: [" + strings.Join(o.aliases, ", ") + "]\n"
	}
	transports := "[udp]"
	if o.tcp {
		transports = "[udp, tcp]"
	}
	cfg := "log:\n  level: debug\n" +
		"sip:\n  transports: " + transports + "\n  invite_timeout: " + o.inviteTimeout.String() + "\n  branch_timeout: 2s\n  cancel_wait: 2s\n" +
		"  rate_limit:\n    disabled: true\n  probe:\n    disabled: true\n" + aliases +
		"  auth:\n    nonce_secret: shared-by-replicas\n    algorithms: [MD5]\n    users:\n" + subscribers.String() +
		o.extra +
		"media:\n  heartbeat_interval: " + heartbeat.String() + "\n  orphan_grace: 1s\n  retry_after: 7s\n" + o.media
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"NATS_URL=" + nats.url(),
		"PROXY_SIP_LISTEN_ADDR=" + sipAddr,
		"PROXY_HTTP_ADDR=" + httpAddr,
	}
	p := &proxyNode{process: startProcess(t, name, "proxy", env, "-config", path), sipAddr: sipAddr, httpURL: "http://" + httpAddr}
	waitFor(t, 15*time.Second, name+" ready", func() bool { return httpOK(p.httpURL + "/readyz") })
	p.waitNodes(t, o.nodes)
	return p
}

// waitNodes waits until the proxy's fleet view holds n nodes.
func (p *proxyNode) waitNodes(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%s sees %d media nodes", p.name, n), func() bool {
		return scrape(t, p.httpURL, "callgrid_fleet_nodes") == float64(n)
	})
}

func ha1(u user) string {
	sum := md5.Sum([]byte(u.name + ":callgrid:" + u.password))
	return hex.EncodeToString(sum[:])
}

// scrape returns the sum of a metric's series on a /metrics page (-1 when
// the page cannot be read).
func scrape(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var total float64
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			total += v
		}
	}
	return total
}

func httpOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// freeSIPPort is a port free for both UDP and TCP.
func freeSIPPort(t *testing.T) int {
	t.Helper()
	for range 50 {
		port := freeUDPPort(t)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no port free for udp and tcp")
	return 0
}

// rangeMu keeps parallel searches for port ranges from overlapping.
var (
	rangeMu   sync.Mutex
	nextRange = 41000 + (os.Getpid()%200)*40
)

// freeUDPRange returns the first port of n consecutive free UDP ports.
func freeUDPRange(t *testing.T, n int) int {
	t.Helper()
	rangeMu.Lock()
	defer rangeMu.Unlock()
	for tries := 0; tries < 200; tries++ {
		start := nextRange
		nextRange += n
		if nextRange > 60000 {
			nextRange = 41000
		}
		ok := true
		for p := start; p < start+n && ok; p++ {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
			if err != nil {
				ok = false
				continue
			}
			c.Close()
		}
		if ok {
			return start
		}
	}
	t.Fatal("no free udp port range")
	return 0
}

// withTimeout is a context for one step of a test.
func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
