package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	nodeReadyTimeout = 20 * time.Second
	nodeStopTimeout  = 5 * time.Second
	// clockTicks is USER_HZ, the unit of utime/stime in /proc: 100 on
	// every Linux architecture Go supports.
	clockTicks = 100
)

// nodeProcess is the media node under test, run from its built binary so
// that its CPU time is its own.
type nodeProcess struct {
	cmd      *exec.Cmd
	httpAddr string
	logPath  string
	exited   chan struct{}
	waitErr  error
}

type nodeSettings struct {
	binary           string
	id               string
	natsURL          string
	portMin, portMax int
	dir              string // for its log
}

// startNode starts the node and waits until it is ready. The node gets a
// capacity no benchmark step can fill, so claims measure the media path
// rather than admission.
func startNode(ctx context.Context, s nodeSettings) (*nodeProcess, error) {
	httpAddr, err := freeTCPAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(s.dir, s.id+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create node log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(s.binary)
	cmd.Env = append(cleanEnv(),
		"NATS_URL="+s.natsURL,
		"MEDIA_BUS_URL="+s.natsURL,
		"MEDIA_NODE_ID="+s.id,
		"MEDIA_HTTP_ADDR="+httpAddr,
		"MEDIA_LOG_LEVEL=warn",
		"MEDIA_RTP_BIND_IP=127.0.0.1",
		"MEDIA_RTP_PORT_MIN="+strconv.Itoa(s.portMin),
		"MEDIA_RTP_PORT_MAX="+strconv.Itoa(s.portMax),
		"MEDIA_RTP_MEDIA_TIMEOUT=2m",
		"MEDIA_NODE_CAPACITY_UNITS=1000000",
		"MEDIA_NODE_PASSTHROUGH_COST=1",
		"MEDIA_NODE_TRANSCODE_COST=1",
		"MEDIA_NODE_DRAIN_GRACE=2s",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The node dies with this process even if it is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start media node %s: %w", s.binary, err)
	}
	n := &nodeProcess{cmd: cmd, httpAddr: httpAddr, logPath: logPath, exited: make(chan struct{})}
	go func() {
		n.waitErr = cmd.Wait()
		close(n.exited)
	}()
	if err := n.waitReady(ctx); err != nil {
		n.stop()
		return nil, fmt.Errorf("%w (node log: %s)", err, n.logTail())
	}
	return n, nil
}

// cleanEnv is this process's environment without MEDIA_* and NATS_URL, so
// a developer's settings do not leak into the node under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MEDIA_") || strings.HasPrefix(kv, "NATS_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freeTCPAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port for the node's http: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (n *nodeProcess) pid() int { return n.cmd.Process.Pid }

func (n *nodeProcess) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, nodeReadyTimeout)
	defer cancel()
	client := http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + n.httpAddr + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-n.exited:
			return fmt.Errorf("media node exited at start: %v", n.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("media node not ready after %s", nodeReadyTimeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop drains the node with SIGTERM, then kills it if it lingers.
func (n *nodeProcess) stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(nodeStopTimeout):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

func (n *nodeProcess) alive() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// logTail returns the last lines the node wrote.
func (n *nodeProcess) logTail() string {
	data, err := os.ReadFile(n.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// nodeMetrics is what the benchmark reads from the node's /metrics.
type nodeMetrics struct {
	mallocs       float64
	packetsIn     float64
	packetsOut    float64
	drops         map[string]float64
	gcCycles      float64
	sessions      float64
	transcoding   float64
	heapInUse     float64
	goroutines    float64
	cpuSecondsRaw float64
}

func (n *nodeProcess) scrape() (nodeMetrics, error) {
	m := nodeMetrics{drops: map[string]float64{}}
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + n.httpAddr + "/metrics")
	if err != nil {
		return m, fmt.Errorf("scrape node metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name, labels := line[:sp], ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name, labels = name[:i], name[i:]
		}
		switch name {
		case "go_memstats_mallocs_total":
			m.mallocs = v
		case "go_gc_duration_seconds_count":
			m.gcCycles = v
		case "go_memstats_heap_inuse_bytes":
			m.heapInUse = v
		case "go_goroutines":
			m.goroutines = v
		case "process_cpu_seconds_total":
			m.cpuSecondsRaw = v
		case "callgrid_media_sessions_active":
			m.sessions = v
		case "callgrid_media_sessions_transcoded":
			m.transcoding = v
		case "media_rtp_packets_total":
			switch {
			case strings.Contains(labels, `direction="in"`):
				m.packetsIn += v
			case strings.Contains(labels, `direction="out"`):
				m.packetsOut += v
			}
		case "media_dropped_packets_total":
			m.drops[labelValue(labels, "reason")] += v
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("read node metrics: %w", err)
	}
	if m.mallocs == 0 {
		return m, errors.New("node metrics carry no go_memstats_mallocs_total")
	}
	return m, nil
}

func labelValue(labels, name string) string {
	i := strings.Index(labels, name+`="`)
	if i < 0 {
		return ""
	}
	rest := labels[i+len(name)+2:]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return rest
}

func (m nodeMetrics) dropTotal() float64 {
	var t float64
	for _, v := range m.drops {
		t += v
	}
	return t
}

// procCPU returns a process's user+system CPU time from /proc.
func procCPU(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid > 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/stat"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// Fields after the command name, which may hold spaces and is in
	// parentheses: state is field 3, utime 14, stime 15.
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("parse %s: too few fields", path)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse %s: bad utime/stime", path)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// systemCPU returns the busy and total CPU time of the whole machine from
// /proc/stat (every process, other people's builds included).
func systemCPU() (busy, total time.Duration, err error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, errors.New("parse /proc/stat: no cpu line")
	}
	var sum, idle int64
	for i, s := range f[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc/stat: %w", err)
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		sum += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	tick := time.Second / clockTicks
	return time.Duration(sum-idle) * tick, time.Duration(sum) * tick, nil
}

// stealOf sums the steal time of the given CPUs from /proc/stat: time
// the hypervisor ran something else while they had work.
func stealOf(cpus unix.CPUSet) time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	var ticks int64
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		id, err := strconv.Atoi(f[0][3:])
		if err != nil || !cpus.IsSet(id) {
			continue
		}
		v, _ := strconv.ParseInt(f[8], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// udpRcvbufErrors is the kernel's count of datagrams dropped on full
// receive buffers, machine-wide.
func udpRcvbufErrors() uint64 {
	data, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var header []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		f := strings.Fields(line)
		if header == nil {
			header = f
			continue
		}
		for i, name := range header {
			if name == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}
