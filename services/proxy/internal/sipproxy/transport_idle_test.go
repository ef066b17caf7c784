package sipproxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testIdleTimeout is the shortest idle timeout the config accepts with
// the shortest invite_timeout (1s), which it must exceed.
const testIdleTimeout = 1200 * time.Millisecond

// idleConfig serves TCP (and TLS with a certificate) with short timers.
func idleConfig(t *testing.T, withTLS bool) Config {
	cfg := trustedConfig()
	cfg.Transports = []string{"udp", "tcp"}
	cfg.InviteTimeout = time.Second
	cfg.TCPIdleTimeout = testIdleTimeout
	if withTLS {
		certFile, keyFile := selfSignedCert(t)
		cfg.TLS = TLSConfig{Addr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile}
	}
	return cfg
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key.
func selfSignedCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "callgrid test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// dialStream connects to the proxy's TCP or TLS listener.
func dialStream(t *testing.T, p *runningProxy, transport string) net.Conn {
	t.Helper()
	var (
		conn net.Conn
		err  error
	)
	if transport == "tls" {
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err = tls.DialWithDialer(d, "tcp", p.Addr("tls"), &tls.Config{InsecureSkipVerify: true})
	} else {
		conn, err = net.DialTimeout("tcp", p.Addr("tcp"), 5*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// waitClosed reads conn until the proxy closes it and fails the test if it
// stays open for longer than within.
func waitClosed(t *testing.T, conn net.Conn, within time.Duration) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 512)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", within)
		}
		return
	}
}

// A connection a peer leaves quiet is closed once tcp_idle_timeout passes,
// over TCP and TLS alike, and not before.
func TestIdleConnectionIsClosed(t *testing.T) {
	for _, transport := range []string{"tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			p := startProxy(t, idleConfig(t, transport == "tls"))
			conn := dialStream(t, p, transport)
			start := time.Now()
			if _, err := io.WriteString(conn, tcpOptions(conn, "idle-"+transport, "Content-Length: 0\r\n", "")); err != nil {
				t.Fatal(err)
			}
			if got := readStatus(t, conn, bufio.NewReader(conn)); !strings.HasPrefix(got, "SIP/2.0 200") {
				t.Fatalf("options: %q", got)
			}
			waitClosed(t, conn, testIdleTimeout+5*time.Second)
			if elapsed := time.Since(start); elapsed < testIdleTimeout {
				t.Fatalf("closed after %v of quiet, before the idle timeout of %v", elapsed, testIdleTimeout)
			}
			if got := testutil.ToFloat64(p.m.idleClosed.WithLabelValues(transport)); got != 1 {
				t.Fatalf("idle closures counted %v, want 1", got)
			}
		})
	}
}

// RFC 5626 keep-alives are traffic: a peer pinging with a double CRLF
// keeps its connection open long past the idle timeout, and every ping
// gets its single-CRLF pong.
func TestKeepAlivesKeepConnectionOpen(t *testing.T) {
	t.Parallel()
	p := startProxy(t, idleConfig(t, false))
	conn := dialStream(t, p, "tcp")
	r := bufio.NewReader(conn)
	start := time.Now()
	for time.Since(start) < 2*testIdleTimeout {
		time.Sleep(testIdleTimeout / 4)
		if _, err := io.WriteString(conn, "\r\n\r\n"); err != nil {
			t.Fatalf("ping after %v: %v", time.Since(start), err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		pong := make([]byte, 2)
		if _, err := io.ReadFull(r, pong); err != nil || string(pong) != "\r\n" {
			t.Fatalf("pong after %v: %q, %v", time.Since(start), pong, err)
		}
	}
	if _, err := io.WriteString(conn, tcpOptions(conn, "after-pings", "Content-Length: 0\r\n", "")); err != nil {
		t.Fatal(err)
	}
	if got := readStatus(t, conn, r); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("options after %v of keep-alives: %q", time.Since(start), got)
	}
	if got := testutil.ToFloat64(p.m.idleClosed.WithLabelValues("tcp")); got != 0 {
		t.Fatalf("idle closures counted %v, want none", got)
	}
}

// streamPhone is a phone on a raw TCP connection to the proxy.
type streamPhone struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (ph *streamPhone) send(msg string) {
	ph.t.Helper()
	if _, err := io.WriteString(ph.conn, msg); err != nil {
		ph.t.Fatalf("send: %v", err)
	}
}

// next reads the next message from the stream, skipping keep-alive CRLFs.
func (ph *streamPhone) next() sip.Message {
	ph.t.Helper()
	return ph.nextUntil(time.Now().Add(5 * time.Second))
}

// nextUntil is next, failing the test when nothing comes by deadline.
func (ph *streamPhone) nextUntil(deadline time.Time) sip.Message {
	ph.t.Helper()
	_ = ph.conn.SetReadDeadline(deadline)
	var head strings.Builder
	length := 0
	for {
		line, err := ph.r.ReadString('\n')
		if err != nil {
			ph.t.Fatalf("read: %v", err)
		}
		if line == "\r\n" {
			if head.Len() == 0 {
				continue
			}
			break
		}
		head.WriteString(line)
		name, value, _ := strings.Cut(line, ":")
		if strings.EqualFold(strings.TrimSpace(name), "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(value))
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(ph.r, body); err != nil {
		ph.t.Fatalf("read body: %v", err)
	}
	msg, err := sip.ParseMessage([]byte(head.String() + "\r\n" + string(body)))
	if err != nil {
		ph.t.Fatalf("parse: %v", err)
	}
	return msg
}

// response reads until the response to the request with callID.
func (ph *streamPhone) response(callID string) *sip.Response {
	ph.t.Helper()
	for {
		if res, ok := ph.next().(*sip.Response); ok && res.CallID().Value() == callID {
			return res
		}
	}
}

func (ph *streamPhone) register(seq int, authorization string) *sip.Response {
	ph.t.Helper()
	local := ph.conn.LocalAddr().String()
	msg := "REGISTER sip:localhost SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP " + local + ";branch=z9hG4bK-reg" + strconv.Itoa(seq) + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:bob@localhost>;tag=reg1\r\n" +
		"To: <sip:bob@localhost>\r\n" +
		"Call-ID: tcp-register@test\r\n" +
		"CSeq: " + strconv.Itoa(seq) + " REGISTER\r\n" +
		"Contact: <sip:bob@" + local + ";transport=tcp>\r\n" +
		"Expires: 600\r\n"
	if authorization != "" {
		msg += "Authorization: " + authorization + "\r\n"
	}
	ph.send(msg + "Content-Length: 0\r\n\r\n")
	return ph.response("tcp-register@test")
}

// A phone registering over TCP, with pauses between the challenge and its
// answer and between the calls it takes, keeps its connection as long as
// each pause is shorter than the idle timeout, although the whole takes
// longer: the timeout counts quiet, not age, and what the proxy sends the
// phone counts too.
func TestRegistrationOverTCPOutlivesIdleTimeout(t *testing.T) {
	t.Parallel()
	p := startProxy(t, idleConfig(t, false))
	conn := dialStream(t, p, "tcp")
	phone := &streamPhone{t: t, conn: conn, r: bufio.NewReader(conn)}
	pause := testIdleTimeout * 7 / 10
	start := time.Now()

	challenge := phone.register(1, "")
	if challenge.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("register: %d, want 401", challenge.StatusCode)
	}
	chal, err := digest.ParseChallenge(challenge.GetHeader("WWW-Authenticate").Value())
	if err != nil {
		t.Fatal(err)
	}
	creds, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:localhost", Username: "bob", Password: testPassword, Count: 1, Cnonce: "0a4f113b"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(pause)
	if res := phone.register(2, creds.String()); res.StatusCode != 200 {
		t.Fatalf("authenticated register after %v: %d", time.Since(start), res.StatusCode)
	}

	time.Sleep(pause)
	caller := newPeer(t, "caller")
	status := make(chan int, 1)
	go func() {
		// Not caller.do: t.Fatal belongs to the test's goroutine.
		req := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
		req.SetDestination(p.Addr("udp"))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := caller.cli.Do(ctx, req)
		if err != nil {
			status <- 0
			return
		}
		status <- res.StatusCode
	}()
	var invite *sip.Request
	for invite == nil {
		if req, ok := phone.next().(*sip.Request); ok && req.IsInvite() {
			invite = req
		}
	}
	phone.send(sip.NewResponseFromRequest(invite, sip.StatusBusyHere, "Busy Here", nil).String())
	if got := <-status; got != sip.StatusBusyHere {
		t.Fatalf("call to the phone on TCP after %v: %d, want 486", time.Since(start), got)
	}

	time.Sleep(pause)
	phone.send(tcpOptions(conn, "still-there", "Content-Length: 0\r\n", ""))
	if res := phone.response("still-there@test"); res.StatusCode != 200 {
		t.Fatalf("options after %v: %d", time.Since(start), res.StatusCode)
	}
	if elapsed := time.Since(start); elapsed < 2*testIdleTimeout {
		t.Fatalf("only %v passed: the test proves nothing about the timeout", elapsed)
	}
	if got := testutil.ToFloat64(p.m.idleClosed.WithLabelValues("tcp")); got != 0 {
		t.Fatalf("idle closures counted %v, want none", got)
	}
}

// shortListener fails its first Accepts as a process out of descriptors
// does, then accepts for real.
type shortListener struct {
	net.Listener
	shortages atomic.Int32
}

func (l *shortListener) Accept() (net.Conn, error) {
	if l.shortages.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// sipgo stops serving a listener at the first error its Accept returns,
// and the replica stops with it: running out of descriptors for a moment
// must not take the proxy down. The listener waits and accepts again; a
// closed one still ends the serving, during the wait too.
func TestAcceptRidesOutDescriptorShortage(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	short := &shortListener{Listener: inner}
	short.shortages.Store(3)
	ln := newStreamListener(short, "tcp", streamTimeouts{idle: time.Minute, onIdle: func(net.Conn) {}}, testLogger())
	ln.retryFirst = time.Millisecond
	defer ln.Close()
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept after a descriptor shortage: %v", err)
	}
	_ = conn.Close()

	short.shortages.Store(1 << 30)
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	time.Sleep(20 * time.Millisecond)
	_ = ln.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("accept on a closed listener: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("accept kept retrying on a closed listener")
	}
}

// The replica itself keeps serving through the shortage: Run goes on, and
// the connection waiting in the backlog is served once accepted.
func TestDescriptorShortageDoesNotStopReplica(t *testing.T) {
	cfg := trustedConfig()
	cfg.Transports = []string{"udp", "tcp"}
	s, err := New(cfg, testLogger(), prometheusRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ln := s.tcpLn
	short := &shortListener{Listener: ln.Listener}
	short.shortages.Store(3)
	ln.Listener, ln.retryFirst = short, time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	conn, err := net.DialTimeout("tcp", s.Addr("tcp"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, tcpOptions(conn, "after-shortage", "Content-Length: 0\r\n", "")); err != nil {
		t.Fatal(err)
	}
	if got := readStatus(t, conn, bufio.NewReader(conn)); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("options after the shortage: %q", got)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
}
