package location

import (
	"encoding/base64"
	"encoding/json"
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
