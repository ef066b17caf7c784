package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestSippCallsThroughAnchoredNode: sipp UAC -> proxy -> sipp UAS with the
// media anchored: every call succeeds, the UAC's recorded A-law audio
// reaches the node and the UAS echoes it back, and nothing is left on the
// node afterwards.
func TestSippCallsThroughAnchoredNode(t *testing.T) {
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Skip("sipp not installed (Debian package sip-tester); skipping the sipp scenario")
	}
	const calls = 10
	scenarios, err := filepath.Abs("testdata/sipp")
	if err != nil {
		t.Fatal(err)
	}
	uasPort := freeUDPPort(t)
	extra := fmt.Sprintf("  trusted_networks: [\"127.0.0.0/8\"]\n"+
		"  gateway_groups:\n    - name: sipp\n      gateways:\n        - {name: uas, addr: \"127.0.0.1:%d\"}\n"+
		"  dialplan:\n    - {name: sipp, prefix: \"777\", group: sipp}\n", uasPort)
	s := startStack(t, proxyOpts{extra: extra}, mediaOpts{})

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var uasOut, uacOut bytes.Buffer
	uas := exec.CommandContext(ctx, sipp,
		"-sf", filepath.Join(scenarios, "uas_pcma.xml"),
		"-i", "127.0.0.1", "-p", strconv.Itoa(uasPort),
		"-mi", "127.0.0.1", "-mp", strconv.Itoa(freeUDPRange(t, 4)), "-rtp_echo",
		"-m", strconv.Itoa(calls), "-timeout", "40s", "-nostdin")
	uas.Stdout, uas.Stderr = &uasOut, &uasOut
	if err := uas.Start(); err != nil {
		t.Fatalf("start sipp uas: %v", err)
	}
	uac := exec.CommandContext(ctx, sipp, s.proxy.sipAddr,
		"-sf", filepath.Join(scenarios, "uac_pcma.xml"),
		"-s", "7770001",
		"-i", "127.0.0.1", "-p", strconv.Itoa(freeUDPPort(t)),
		"-mi", "127.0.0.1", "-mp", strconv.Itoa(freeUDPRange(t, 4)),
		"-m", strconv.Itoa(calls), "-r", "5", "-l", "10",
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
	s.node.waitIdle(t)
	if got := scrape(t, s.node.httpURL, "callgrid_media_sessions_ended_total"); got < calls {
		t.Errorf("node ended %v sessions, want %d", got, calls)
	}
	if got := scrape(t, s.node.httpURL, "media_rtp_packets_total"); got < calls*20 {
		t.Errorf("node carried %v RTP packets, want the recording's audio both ways", got)
	}
}

// TestSippAuthenticatedCallsToTheEcho: the README's smoke call, sipp
// answering the proxy's 407 with its own digest (whose uri names the
// proxy, "sip:host:port", not the Request-URI) and playing A-law audio to
// the echo service, which comes back; nothing is left on the node.
func TestSippAuthenticatedCallsToTheEcho(t *testing.T) {
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Skip("sipp not installed (Debian package sip-tester); skipping the sipp scenario")
	}
	const calls = 3
	scenario, err := filepath.Abs("../../scripts/sipp/smoke-uac.xml")
	if err != nil {
		t.Fatal(err)
	}
	s := startStack(t, proxyOpts{extra: serviceRules}, mediaOpts{})

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var out bytes.Buffer
	uac := exec.CommandContext(ctx, sipp, s.proxy.sipAddr,
		"-sf", scenario, "-s", "9196", "-au", alice.name, "-ap", alice.password,
		"-i", "127.0.0.1", "-p", strconv.Itoa(freeUDPPort(t)),
		"-mi", "127.0.0.1", "-mp", strconv.Itoa(freeUDPRange(t, 4)),
		"-m", strconv.Itoa(calls), "-r", "10", "-l", strconv.Itoa(calls),
		"-timeout", "30s", "-timeout_error", "-nostdin")
	uac.Stdout, uac.Stderr = &out, &out
	if err := uac.Run(); err != nil {
		t.Fatalf("sipp uac failed: %v\n%s", err, tail(out.Bytes()))
	}
	s.node.waitIdle(t)
	if got := scrape(t, s.node.httpURL, "callgrid_media_sessions_ended_total"); got < calls {
		t.Errorf("node ended %v sessions, want %d", got, calls)
	}
	if got := scrape(t, s.node.httpURL, "media_rtp_packets_total"); got < calls*2*100 {
		t.Errorf("node carried %v RTP packets, want the capture's audio there and back", got)
	}
}

func tail(b []byte) []byte {
	const n = 4000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return b
}
