package sipproxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
	"callgrid.dev/services/proxy/internal/location"
)

func TestMediaSessionRoundTripsThroughRouteParams(t *testing.T) {
	cases := []struct {
		name string
		sess mediaSession
	}{
		{name: "bridge", sess: mediaSession{node: "media-1", session: "abc123", callerTag: tagHash("a%b!c")}},
		{name: "late offer without node", sess: mediaSession{session: "abc123", callerTag: tagHash("x"), lateOffer: true}},
		{name: "service", sess: mediaSession{node: "media-1", session: "abc123", service: ServiceEcho}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			uri := sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: 5060, UriParams: tc.sess.params()}
			var back sip.Uri
			if err := sip.ParseUri(uri.String(), &back); err != nil {
				t.Fatalf("parse %s: %v", uri.String(), err)
			}
			got, ok := mediaSessionFrom(back.UriParams)
			if !ok || got != tc.sess {
				t.Fatalf("got %+v (%v), want %+v", got, ok, tc.sess)
			}
		})
	}
	if _, ok := mediaSessionFrom(sip.HeaderParams{{K: "lr", V: ""}}); ok {
		t.Error("a plain route carries no session")
	}
}

func TestLegOfTellsPartiesApart(t *testing.T) {
	const caller, callee = "caller-tag", "callee-tag"
	cases := []struct {
		name      string
		lateOffer bool
		from      string
		want      callgridv1.Leg
	}{
		{name: "caller of a normal call", from: caller, want: callgridv1.Leg_LEG_A},
		{name: "callee of a normal call", from: callee, want: callgridv1.Leg_LEG_B},
		{name: "caller of a late offer", lateOffer: true, from: caller, want: callgridv1.Leg_LEG_B},
		{name: "callee of a late offer", lateOffer: true, from: callee, want: callgridv1.Leg_LEG_A},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mediaSession{session: "s", callerTag: tagHash(caller), lateOffer: tc.lateOffer}
			if got := m.legOf(tc.from); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestClassifyMediaErrors(t *testing.T) {
	s := &Server{cfg: Config{DrainRetryAfter: 5 * time.Second}, media: &MediaOptions{RetryAfter: 9 * time.Second}}
	statusErr := func(st callgridv1.Status) error {
		return fmt.Errorf("claim: %w", &bus.StatusError{Op: "offer", NodeID: "n", Status: st})
	}
	cases := []struct {
		name       string
		err        error
		code       int
		reason     string
		retryAfter time.Duration
		warning    bool
	}{
		{name: "fleet full", err: fmt.Errorf("claim: %w", fleet.ErrNoMediaCapacity), code: 503, reason: "no_media_capacity", retryAfter: 9 * time.Second},
		{name: "bus down", err: fmt.Errorf("claim: %w", bus.ErrUnavailable), code: 503, reason: "bus_unavailable", retryAfter: 9 * time.Second},
		{name: "node gone", err: fmt.Errorf("answer: %w", bus.ErrNoResponders), code: 503, reason: "media_unreachable", retryAfter: 9 * time.Second},
		{name: "bad sdp", err: statusErr(callgridv1.Status_STATUS_BAD_SDP), code: 488, reason: "bad_sdp"},
		{name: "unsupported codec", err: statusErr(callgridv1.Status_STATUS_UNSUPPORTED_CODEC), code: 488, reason: "unsupported_codec", warning: true},
		{name: "unknown session", err: statusErr(callgridv1.Status_STATUS_UNKNOWN_SESSION), code: 481, reason: "unknown_session"},
		{name: "no room to transcode", err: statusErr(callgridv1.Status_STATUS_FULL), code: 503, reason: "no_media_capacity", retryAfter: 9 * time.Second},
		{name: "node internal", err: statusErr(callgridv1.Status_STATUS_INTERNAL), code: 500, reason: "media_error"},
		{name: "draining proxy", err: errDraining, code: 503, reason: "draining", retryAfter: 5 * time.Second},
		{name: "no offer for a service", err: errNoOffer, code: 488, reason: "no_offer"},
		{name: "sip error unchanged", err: errNoRoute, code: 404, reason: "no_route"},
		{name: "registration too large to store", err: fmt.Errorf("register: %w", location.ErrTooLarge), code: 413, reason: "registration_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := s.classify(tc.err)
			if f.code != tc.code || f.reason != tc.reason || f.retryAfter != tc.retryAfter || (f.warning != "") != tc.warning {
				t.Fatalf("got %+v, want code %d reason %s retry-after %v warning %v", f, tc.code, tc.reason, tc.retryAfter, tc.warning)
			}
		})
	}
}

func TestNodeLeavesWaitForGraceWithTheBusUp(t *testing.T) {
	now := time.Unix(1000, 0)
	q := NewNodeLeaves()
	q.now = func() time.Time { return now }
	none := func(string) bool { return false }
	q.Add("dead")
	q.Add("back")
	const grace = 2 * time.Second

	now = now.Add(grace)
	if got := q.due(grace, false, none); len(got) != 0 {
		t.Fatalf("due while the bus is away: %v", got)
	}
	now = now.Add(grace / 2)
	if got := q.due(grace, true, none); len(got) != 0 {
		t.Fatalf("due before a full grace with the bus up: %v", got)
	}
	now = now.Add(grace)
	got := q.due(grace, true, func(id string) bool { return id == "back" })
	if len(got) != 1 || got[0] != "dead" {
		t.Fatalf("due %v, want [dead]", got)
	}
	if got := q.due(grace, true, none); len(got) != 0 {
		t.Fatalf("a node back in the fleet or already reaped came due again: %v", got)
	}
}

func TestSDPBodyRecognisesOnlySDP(t *testing.T) {
	cases := []struct {
		name, contentType, body string
		sdp, foreign            bool
	}{
		{name: "sdp", contentType: "application/sdp", body: "v=0\r\n", sdp: true},
		{name: "sdp with params", contentType: "Application/SDP; charset=utf-8", body: "v=0\r\n", sdp: true},
		{name: "no content type", body: "v=0\r\n", sdp: true},
		{name: "multipart", contentType: "multipart/mixed;boundary=x", body: "--x\r\n", foreign: true},
		{name: "empty", contentType: "application/sdp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", Host: "h"})
			if tc.contentType != "" {
				req.AppendHeader(sip.NewHeader("Content-Type", tc.contentType))
			}
			req.SetBody([]byte(tc.body))
			if got := sdpBody(req) != nil; got != tc.sdp {
				t.Errorf("sdp %v, want %v", got, tc.sdp)
			}
			if got := hasForeignBody(req); got != tc.foreign {
				t.Errorf("foreign %v, want %v", got, tc.foreign)
			}
		})
	}
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", Host: "h"})
	req.AppendHeader(sip.NewHeader("Content-Type", "text/plain"))
	setSDPBody(req, []byte("v=0\r\n"))
	if ct := req.GetHeader("Content-Type"); ct == nil || ct.Value() != "application/sdp" || req.ContentLength() == nil || int(*req.ContentLength()) != 5 {
		t.Fatalf("rewritten headers: %v %v", ct, req.ContentLength())
	}
}
