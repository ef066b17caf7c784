package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

const (
	claimWorkers = 8
	claimTimeout = 5 * time.Second
)

// mode is what the two legs of every call speak.
type mode int

const (
	modeUnknown mode = iota
	// modePassthrough: PCMU on both legs, relayed.
	modePassthrough
	// modeTranscode: PCMU on leg A, Opus on leg B.
	modeTranscode
)

func (m mode) String() string {
	switch m {
	case modePassthrough:
		return "passthrough"
	case modeTranscode:
		return "transcode"
	default:
		return "unknown"
	}
}

func parseMode(s string) (mode, error) {
	switch s {
	case "passthrough":
		return modePassthrough, nil
	case "transcode":
		return modeTranscode, nil
	}
	return modeUnknown, fmt.Errorf("unknown mode %q (passthrough or transcode)", s)
}

// call is one bridged call held on the node.
type call struct {
	sessionID, nodeID string
	ab, ba            *stream // ab: sent by leg A's endpoint, received by B's
}

// callSet claims calls on the node and wires their streams into the
// generator.
type callSet struct {
	claimer *fleet.Claimer
	mode    mode
	media   *preparedMedia
	socks   []*endpointSocket
	pacer   *pacer
	byPort  *[65536]atomic.Pointer[stream]

	mu    sync.Mutex
	calls []*call
}

// grow claims calls until n are held.
func (cs *callSet) grow(ctx context.Context, n int) error {
	cs.mu.Lock()
	have := len(cs.calls)
	cs.mu.Unlock()
	if n <= have {
		return nil
	}
	next := make(chan int)
	errs := make(chan error, claimWorkers)
	var wg sync.WaitGroup
	for range claimWorkers {
		wg.Go(func() {
			for i := range next {
				c, err := cs.claim(ctx, i)
				if err != nil {
					errs <- err
					return
				}
				cs.mu.Lock()
				cs.calls = append(cs.calls, c)
				cs.mu.Unlock()
			}
		})
	}
	var err error
feed:
	for i := have; i < n; i++ {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err != nil {
		return err
	}
	return <-errs
}

// claim sets up call i: offer with leg A's SDP through the fleet claimer,
// answer with leg B's, then schedules both directions.
func (cs *callSet) claim(ctx context.Context, i int) (*call, error) {
	ctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	sockA := cs.socks[(2*i)%len(cs.socks)]
	sockB := cs.socks[(2*i+1)%len(cs.socks)]
	offer, err := cs.claimer.Offer(ctx, &callgridv1.OfferRequest{
		CallId:    "mediaload-" + strconv.Itoa(i),
		SessionId: fleet.NewSessionID(),
		Sdp:       endpointSDP(sockA.port, 0, "PCMU/8000", ""),
	})
	if err != nil {
		return nil, fmt.Errorf("claim call %d: %w", i, err)
	}
	c := &call{sessionID: offer.GetSessionId(), nodeID: offer.GetNodeId()}
	portB, err := sdpAudioPort(offer.GetSdp())
	if err != nil {
		return nil, fmt.Errorf("offer reply of call %d: %w", i, err)
	}
	sdpB := endpointSDP(sockB.port, 0, "PCMU/8000", "")
	if cs.mode == modeTranscode {
		pt, ok := sdpOpusPT(offer.GetSdp())
		if !ok {
			return nil, fmt.Errorf("offer reply of call %d offers no opus", i)
		}
		sdpB = endpointSDP(sockB.port, pt, "opus/48000/2", "useinbandfec=1")
	}
	answer, err := cs.claimer.Answer(ctx, c.nodeID, &callgridv1.AnswerRequest{SessionId: c.sessionID, Sdp: sdpB})
	if err != nil {
		return nil, fmt.Errorf("answer call %d: %w", i, err)
	}
	if want := cs.mode == modeTranscode; answer.GetTranscoding() != want {
		return nil, fmt.Errorf("answer call %d: node says transcoding=%v, want %v", i, answer.GetTranscoding(), want)
	}
	portA, err := sdpAudioPort(answer.GetSdp())
	if err != nil {
		return nil, fmt.Errorf("answer reply of call %d: %w", i, err)
	}

	c.ab = newStream(sockA.fd, portA, 0, 160, cs.media.pcmu)
	if cs.mode == modeTranscode {
		pt, _ := sdpOpusPT(offer.GetSdp())
		c.ba = newStream(sockB.fd, portB, pt, 960, cs.media.opus)
	} else {
		c.ba = newStream(sockB.fd, portB, 0, 160, cs.media.pcmu)
	}
	// The node sends what A sent out of its B-leg port, and what B sent
	// out of its A-leg port.
	cs.byPort[portB].Store(c.ab)
	cs.byPort[portA].Store(c.ba)
	cs.pacer.add(c.ab)
	cs.pacer.add(c.ba)
	return c, nil
}

func newStream(fd, nodePort int, pt uint8, tsStep uint32, frames [][]byte) *stream {
	s := &stream{
		sendFD: fd,
		dst:    unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}},
		pkt:    make([]byte, rtpHeaderLen+maxFrameLen(frames)),
		frames: frames,
		pt:     pt,
		tsStep: tsStep,
		ts:     rand.Uint32(),
		ssrc:   rand.Uint32(),
	}
	p := (*[2]byte)(portBytes(&s.dst))
	p[0], p[1] = byte(nodePort>>8), byte(nodePort)
	return s
}

// releaseAll deletes every call and sums what the node says it lost.
func (cs *callSet) releaseAll(ctx context.Context) (lost int64, err error) {
	cs.mu.Lock()
	calls := cs.calls
	cs.calls = nil
	cs.mu.Unlock()
	cs.pacer.mu.Lock()
	for i := range cs.pacer.slots {
		clear(cs.pacer.slots[i])
	}
	cs.pacer.mu.Unlock()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next = make(chan *call)
	)
	for range claimWorkers {
		wg.Go(func() {
			for c := range next {
				dctx, cancel := context.WithTimeout(ctx, claimTimeout)
				reply, derr := cs.claimer.Delete(dctx, c.nodeID, &callgridv1.DeleteRequest{SessionId: c.sessionID, Cause: "mediaload"})
				cancel()
				mu.Lock()
				if derr != nil {
					errs = append(errs, derr)
				} else {
					lost += int64(reply.GetQuality().GetLegA().GetPacketsLost() + reply.GetQuality().GetLegB().GetPacketsLost())
				}
				mu.Unlock()
			}
		})
	}
	for _, c := range calls {
		next <- c
	}
	close(next)
	wg.Wait()
	for i := range cs.byPort {
		cs.byPort[i].Store(nil)
	}
	if len(errs) > 0 {
		return lost, fmt.Errorf("delete %d of %d calls failed, first: %w", len(errs), len(calls), errs[0])
	}
	return lost, nil
}

// endpointSDP is a phone's SDP on loopback with one codec and rtcp-mux (so
// the node's RTCP, if any, comes back to the RTP socket).
func endpointSDP(port int, pt uint8, rtpmap, fmtp string) []byte {
	s := "v=0\r\n" +
		"o=- 1 1 IN IP4 127.0.0.1\r\n" +
		"s=-\r\n" +
		"c=IN IP4 127.0.0.1\r\n" +
		"t=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/AVP " + strconv.Itoa(int(pt)) + "\r\n" +
		"a=rtpmap:" + strconv.Itoa(int(pt)) + " " + rtpmap + "\r\n"
	if fmtp != "" {
		s += "a=fmtp:" + strconv.Itoa(int(pt)) + " " + fmtp + "\r\n"
	}
	s += "a=ptime:20\r\na=rtcp-mux\r\na=sendrecv\r\n"
	return []byte(s)
}

var (
	reAudioPort = regexp.MustCompile(`(?m)^m=audio (\d+) `)
	reConn      = regexp.MustCompile(`(?m)^c=IN IP4 (\S+)`)
	reOpusPT    = regexp.MustCompile(`(?mi)^a=rtpmap:(\d+) opus/48000`)
)

// sdpAudioPort returns the node's RTP port from its SDP, which must be on
// loopback.
func sdpAudioPort(sdp []byte) (int, error) {
	m := reAudioPort.FindSubmatch(sdp)
	c := reConn.FindSubmatch(sdp)
	if m == nil || c == nil {
		return 0, errors.New("sdp has no audio port or connection address")
	}
	if a, err := netip.ParseAddr(string(c[1])); err != nil || !a.IsLoopback() {
		return 0, fmt.Errorf("node advertises %s, not a loopback address", c[1])
	}
	port, err := strconv.Atoi(string(m[1]))
	if err != nil || port <= 0 || port > 65535 {
		return 0, fmt.Errorf("bad audio port %q", m[1])
	}
	return port, nil
}

func sdpOpusPT(sdp []byte) (uint8, bool) {
	m := reOpusPT.FindSubmatch(sdp)
	if m == nil {
		return 0, false
	}
	pt, err := strconv.Atoi(string(m[1]))
	return uint8(pt), err == nil && pt >= 96 && pt <= 127
}
