package location

import (
	"errors"
	"fmt"
	"strconv"
)

// QValue is a contact's q-value (RFC 3261 20.10): how much the user prefers
// it to the AOR's other contacts, from 0.000 to 1.000 in steps of 0.001.
// Routing rings the contacts of the highest q-value first, all at once,
// and the lower ones only if those all fail.
//
// The zero QValue is a contact registered without q, and every binding an
// older release stored: it ranks as 1.0 (QDefault), as Kamailio's
// t_load_contacts ranks one, and the registrar lists it back without q,
// as it was registered. The value is kept in thousandths plus one, so that
// the zero value stays apart from an explicit q=0.
type QValue uint16

// QDefault is the rank of a contact registered without q.
const QDefault = 1000

// QMilli is the q-value of milli thousandths, clamped to 0..1000.
func QMilli(milli int) QValue {
	return QValue(min(max(milli, 0), 1000) + 1)
}

// IsSet reports whether the contact was registered with a q parameter.
func (q QValue) IsSet() bool { return q != 0 }

// Milli is the q-value in thousandths, QDefault when unset.
func (q QValue) Milli() int {
	if q == 0 {
		return QDefault
	}
	return int(q) - 1
}

// errQValue is what ParseQ returns for anything the qvalue grammar does
// not produce.
var errQValue = errors.New("not a qvalue")

// ParseQ reads a q parameter's value by RFC 3261's grammar: "0" with up to
// three decimals, or "1" with up to three zeros ("0", "0.5", "0.125",
// "1", "1.000"). Anything else is an error: RFC 3261 has a request whose
// header does not parse refused with 400, and Kamailio's registrar answers
// such a Contact "400 Invalid q parameter" rather than guessing a rank.
func ParseQ(v string) (QValue, error) {
	if v == "" || len(v) > 5 || (v[0] != '0' && v[0] != '1') {
		return 0, fmt.Errorf("q %q: %w", v, errQValue)
	}
	milli := int(v[0]-'0') * 1000
	if len(v) > 1 {
		if v[1] != '.' {
			return 0, fmt.Errorf("q %q: %w", v, errQValue)
		}
		scale := 100
		for i := 2; i < len(v); i++ {
			d := v[i]
			if d < '0' || d > '9' || (v[0] == '1' && d != '0') {
				return 0, fmt.Errorf("q %q: %w", v, errQValue)
			}
			milli += int(d-'0') * scale
			scale /= 10
		}
	}
	return QMilli(milli), nil
}

// String writes the q-value as a q parameter does, in its shortest form
// ("1", "0.5", "0.125"), the way Kamailio lists it; "" when unset.
func (q QValue) String() string {
	if q == 0 {
		return ""
	}
	return string(q.appendTo(nil))
}

func (q QValue) appendTo(b []byte) []byte {
	m := q.Milli()
	switch m {
	case 1000:
		return append(b, '1')
	case 0:
		return append(b, '0')
	}
	frac := []byte{'0' + byte(m/100), '0' + byte(m/10%10), '0' + byte(m%10)}
	for len(frac) > 1 && frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	return append(append(b, '0', '.'), frac...)
}

// MarshalJSON writes the q-value as a JSON number, as a Contact has it.
// Bindings omit an unset one (omitzero), which is how older records read.
func (q QValue) MarshalJSON() ([]byte, error) {
	if q == 0 {
		return []byte("null"), nil
	}
	return q.appendTo(nil), nil
}

// UnmarshalJSON reads what MarshalJSON writes; null is unset. A number in
// another form (1.0e0, 0.50000) is taken for what it says, rounded to
// thousandths, as long as it lies within 0 and 1.
func (q *QValue) UnmarshalJSON(data []byte) error {
	s := string(data)
	if s == "null" {
		*q = 0
		return nil
	}
	if v, err := ParseQ(s); err == nil {
		*q = v
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f > 1 {
		return fmt.Errorf("q %s: %w", s, errQValue)
	}
	*q = QMilli(int(f*1000 + 0.5))
	return nil
}
