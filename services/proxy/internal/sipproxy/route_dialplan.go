package sipproxy

import (
	"fmt"
	"regexp"
	"strings"
)

// dialplan maps a Request-URI user onto a gateway group. Rules are tried in
// configuration order and the first match wins; registered users are looked
// up before any rule, so a rule never shadows a registered phone.
type dialplan struct {
	rules []compiledRule
}

type compiledRule struct {
	DialplanRule
	re *regexp.Regexp
}

func newDialplan(rules []DialplanRule) (*dialplan, error) {
	d := &dialplan{}
	for i, r := range rules {
		c := compiledRule{DialplanRule: r}
		if r.Regex != "" {
			re, err := regexp.Compile(r.Regex)
			if err != nil {
				return nil, fmt.Errorf("compile dialplan[%d] regex: %w", i, err)
			}
			c.re = re
		}
		d.rules = append(d.rules, c)
	}
	return d, nil
}

// match returns the first rule matching user and the user part to send on.
func (d *dialplan) match(user string) (*compiledRule, string, bool) {
	for i := range d.rules {
		r := &d.rules[i]
		if r.re != nil && !r.re.MatchString(user) {
			continue
		}
		if r.re == nil && !strings.HasPrefix(user, r.Prefix) {
			continue
		}
		out := user
		if r.Strip > 0 {
			out = out[min(r.Strip, len(out)):]
		}
		return r, r.AddPrefix + out, true
	}
	return nil, "", false
}
