package location

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// recordKeyPrefix starts the key of every AOR record. Keys of the earlier
// layout, one per (AOR, contact), never start with it, so a bucket that
// still holds some (they lapse with the bucket's max_age) is watched and
// read without them.
const recordKeyPrefix = "aor."

// aorRecord is what one bucket key holds: every binding of one AOR. A
// registration reads, checks and rewrites an AOR's bindings as a whole
// (CSeq order per Call-ID, the contact limit, a remove-all "*"), so they
// live under one key, where a single compare-and-set makes that atomic
// across replicas. With a key per contact, two REGISTERs each adding a
// contact write different keys and no revision check sees the other.
type aorRecord struct {
	AOR      string    `json:"aor"`
	Bindings []Binding `json:"bindings"`
}

// maxAORBytes bounds an AOR that can have a record. Its key, base64 and
// so a third longer, goes into the subject of every request for the record,
// and a NATS server closes a connection whose protocol line exceeds its
// max_control_line (4 KiB by default), which the client then does not
// reopen: one lookup of a long enough AOR would cut a replica off the bus.
// This keeps the line well inside the default with room for a long bucket
// name, and far above any real AOR (Kamailio's location table allows 64
// bytes of user and of domain).
const maxAORBytes = 1024

// checkAOR reports whether aor can have a record in the bucket.
func checkAOR(aor string) error {
	switch {
	case aor == "":
		return errors.New("empty aor")
	case len(aor) > maxAORBytes:
		return fmt.Errorf("aor of %d bytes, above %d: %w", len(aor), maxAORBytes, ErrTooLarge)
	}
	return nil
}

// recordKey maps an AOR onto the KV key alphabet, reversibly and exactly:
// the user part of an AOR is case-sensitive (RFC 3261 19.1.4), so Bob and
// bob are different keys.
func recordKey(aor string) string {
	return recordKeyPrefix + base64.RawURLEncoding.EncodeToString([]byte(aor))
}

// aorOfKey reverses recordKey; ok is false for a key of another layout.
func aorOfKey(key string) (aor string, ok bool) {
	enc, found := strings.CutPrefix(key, recordKeyPrefix)
	if !found {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", false
	}
	return string(raw), true
}

func encodeRecord(aor string, bindings []Binding) ([]byte, error) {
	data, err := json.Marshal(aorRecord{AOR: aor, Bindings: bindings})
	if err != nil {
		return nil, fmt.Errorf("encode bindings of %s: %w", aor, err)
	}
	return data, nil
}

func decodeRecord(data []byte) (aorRecord, error) {
	var r aorRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return aorRecord{}, fmt.Errorf("decode bindings: %w", err)
	}
	return r, nil
}
