package sipproxy

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestSippCallThroughProxy runs sipp UAC -> proxy -> sipp UAS: every call's
// INVITE is record-routed, and ACK and BYE must come back through the proxy.
func TestSippCallThroughProxy(t *testing.T) {
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Skip("sipp not installed (Debian package sip-tester); skipping the sipp scenario")
	}
	const calls = 20
	scenarios, err := filepath.Abs("../../testdata/sipp")
	if err != nil {
		t.Fatal(err)
	}
	uasPort := freeUDPPort(t)
	gw := Gateway{Name: "sipp-uas", Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(uasPort))}
	cfg := trustedConfig()
	cfg.GatewayGroups = []GatewayGroup{{Name: "uas", Gateways: []Gateway{gw}}}
	cfg.Dialplan = []DialplanRule{{Name: "all", Regex: `^[0-9]+$`, Group: "uas"}}
	p := startProxy(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var uasOut, uacOut bytes.Buffer
	uas := exec.CommandContext(ctx, sipp,
		"-sf", filepath.Join(scenarios, "uas_record_route.xml"),
		"-i", "127.0.0.1", "-p", strconv.Itoa(uasPort),
		"-m", strconv.Itoa(calls), "-timeout", "40s", "-nostdin")
	uas.Stdout, uas.Stderr = &uasOut, &uasOut
	if err := uas.Start(); err != nil {
		t.Fatalf("start sipp uas: %v", err)
	}
	uac := exec.CommandContext(ctx, sipp, p.Addr("udp"),
		"-sf", filepath.Join(scenarios, "uac_record_route.xml"),
		"-s", "15550001",
		"-i", "127.0.0.1", "-p", strconv.Itoa(freeUDPPort(t)),
		"-m", strconv.Itoa(calls), "-r", "10", "-l", "10",
		"-timeout", "40s", "-nostdin")
	uac.Stdout, uac.Stderr = &uacOut, &uacOut
	if err := uac.Run(); err != nil {
		_ = uas.Process.Kill()
		_ = uas.Wait()
		t.Fatalf("sipp uac failed: %v\n--- uac ---\n%s\n--- uas ---\n%s", err, tail(uacOut.Bytes()), tail(uasOut.Bytes()))
	}
	if err := uas.Wait(); err != nil {
		t.Fatalf("sipp uas failed: %v\n%s", err, tail(uasOut.Bytes()))
	}
	for _, method := range []string{"INVITE", "ACK", "BYE"} {
		if got := testutil.ToFloat64(p.m.requests.WithLabelValues(method)); got < calls {
			t.Errorf("proxy saw %v %s, want at least %d", got, method, calls)
		}
	}
}

func tail(b []byte) []byte {
	const n = 4000
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
