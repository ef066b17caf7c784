package sipproxy

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestForkMessageToTwoContacts: a MESSAGE to a user with two contacts goes
// to both at once. A non-INVITE request cannot be cancelled (RFC 3261
// 9.1), so once one contact accepts, the other branch is given up, its
// late answer dropped (RFC 6026 8.9, no 2xx to an INVITE), and the
// sender gets the one 2xx; when neither accepts, the sender gets the best
// of their answers (16.7 step 6). Nobody waits on after the answer.
func TestForkMessageToTwoContacts(t *testing.T) {
	tests := []struct {
		name          string
		first, second int // in the order they answer
		want          int
	}{
		{name: "one accepts after the other declines", first: sip.StatusNotFound, second: sip.StatusOK, want: sip.StatusOK},
		{name: "the first accepts", first: sip.StatusOK, second: sip.StatusOK, want: sip.StatusOK},
		{name: "both decline", first: sip.StatusInternalServerError, second: sip.StatusBusyHere, want: sip.StatusBusyHere},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, trustedConfig())
			a, b := addRawContact(t, p, "a"), addRawContact(t, p, "b")
			caller := newPeer(t, "caller")
			msg := caller.request(sip.MESSAGE, "sip:bob@localhost", "alice")
			msg.SetBody([]byte("hello"))
			ct := sip.ContentTypeHeader("text/plain")
			msg.AppendHeader(&ct)
			msg.SetDestination(p.Addr("udp"))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tx, err := caller.cli.TransactionRequest(ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Terminate()
			atA, atB := a.request(t, sip.MESSAGE), b.request(t, sip.MESSAGE)

			a.respond(t, p, atA, tc.first, nil)
			// After the first answer is in: the order is the test's.
			time.Sleep(100 * time.Millisecond)
			b.respond(t, p, atB, tc.second, nil)

			var res *sip.Response
			select {
			case res = <-tx.Responses():
			case <-ctx.Done():
				t.Fatal("no answer to the MESSAGE")
			}
			if res.StatusCode != tc.want {
				t.Fatalf("sender got %d, want %d", res.StatusCode, tc.want)
			}
			// Nothing more comes: not the other contact's answer.
			select {
			case r := <-tx.Responses():
				t.Fatalf("sender got a second answer, %d", r.StatusCode)
			case <-time.After(300 * time.Millisecond):
			}
			noPumpsLeft(t, p)
		})
	}
}
