package location

import (
	"strings"
	"testing"
	"time"
)

func TestParseQ(t *testing.T) {
	tests := []struct {
		in    string
		milli int
		bad   bool
	}{
		{in: "0", milli: 0},
		{in: "0.", milli: 0},
		{in: "0.5", milli: 500},
		{in: "0.125", milli: 125},
		{in: "0.07", milli: 70},
		{in: "1", milli: 1000},
		{in: "1.0", milli: 1000},
		{in: "1.000", milli: 1000},
		{in: "", bad: true},
		{in: "1.001", bad: true},
		{in: "1.5", bad: true},
		{in: "2", bad: true},
		{in: "0.1234", bad: true},
		{in: ".5", bad: true},
		{in: "-0", bad: true},
		{in: "0,5", bad: true},
		{in: "0.5x", bad: true},
		{in: "high", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			q, err := ParseQ(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseQ(%q) = %v, want an error", tc.in, q.Milli())
				}
				return
			}
			if err != nil || !q.IsSet() || q.Milli() != tc.milli {
				t.Fatalf("ParseQ(%q) = %d (set %v), %v; want %d", tc.in, q.Milli(), q.IsSet(), err, tc.milli)
			}
		})
	}
}

func TestQValueString(t *testing.T) {
	for milli, want := range map[int]string{0: "0", 1: "0.001", 70: "0.07", 500: "0.5", 125: "0.125", 1000: "1"} {
		if got := QMilli(milli).String(); got != want {
			t.Errorf("q of %d thousandths is %q, want %q", milli, got, want)
		}
	}
	var unset QValue
	if unset.IsSet() || unset.Milli() != QDefault || unset.String() != "" {
		t.Errorf("unset q: set %v, milli %d, %q", unset.IsSet(), unset.Milli(), unset.String())
	}
}

// TestRecordKeepsQAndReadsOlderRecords: a binding's q survives the record
// it is stored in, an explicit q=0 included, and a record of an older
// release, which has no q, reads as unset (ranked 1.0).
func TestRecordKeepsQAndReadsOlderRecords(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	in := []Binding{
		{AOR: "bob@localhost", Contact: "sip:bob@10.0.0.1", Expires: now.Add(time.Hour), UpdatedAt: now, Q: QMilli(500)},
		{AOR: "bob@localhost", Contact: "sip:bob@10.0.0.2", Expires: now.Add(time.Hour), UpdatedAt: now, Q: QMilli(0)},
		{AOR: "bob@localhost", Contact: "sip:bob@10.0.0.3", Expires: now.Add(time.Hour), UpdatedAt: now},
	}
	data, err := encodeRecord("bob@localhost", in)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), `"q":`); n != 2 {
		t.Errorf("record holds %d q fields, want 2 (none for the unset one): %s", n, data)
	}
	r, err := decodeRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range r.Bindings {
		if b.Q != in[i].Q {
			t.Errorf("binding %d: q %v (set %v), want %v (set %v)", i, b.Q, b.Q.IsSet(), in[i].Q, in[i].Q.IsSet())
		}
	}

	older := `{"aor":"bob@localhost","bindings":[{"aor":"bob@localhost","contact":"sip:bob@10.0.0.1","received":"10.0.0.1:5060","transport":"UDP","expires":"2030-01-01T00:00:00Z","call_id":"c","cseq":1,"updated_at":"2026-01-01T00:00:00Z"}]}`
	r, err = decodeRecord([]byte(older))
	if err != nil {
		t.Fatal(err)
	}
	if b := r.Bindings[0]; b.Q.IsSet() || b.Q.Milli() != 1000 {
		t.Fatalf("older record: q set %v, %d thousandths; want unset, ranked 1000", b.Q.IsSet(), b.Q.Milli())
	}

	for _, tc := range []struct {
		json  string
		milli int
		bad   bool
	}{
		{json: `1.0`, milli: 1000},
		{json: `0.50`, milli: 500},
		{json: `5e-1`, milli: 500},
		{json: `1.5`, bad: true},
		{json: `"0.5"`, bad: true},
	} {
		var q QValue
		err := q.UnmarshalJSON([]byte(tc.json))
		if (err != nil) != tc.bad || (!tc.bad && q.Milli() != tc.milli) {
			t.Errorf("q %s read as %d, %v", tc.json, q.Milli(), err)
		}
	}
}
