package sipproxy

import (
	"cmp"
	"hash/fnv"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// gatewayState is one gateway and its health, as probes and calls tell it.
type gatewayState struct {
	cfg    Gateway
	group  string
	host   string
	port   int
	policy *failurePolicy
	// up is read on every call; probes and failed calls flip it.
	up atomic.Bool
	// gen counts the flips of up. A branch or probe result counts only
	// in the state it was sent in: one sent before the gateway went down
	// or came back says nothing of it now.
	gen atomic.Uint64
	// callFails counts consecutive calls that failed on the gateway;
	// every call that reaches it alive clears it, without the lock.
	callFails atomic.Int32
	// probing guards against overlapping probes of one gateway.
	probing atomic.Bool

	mu        sync.Mutex
	fails     int // consecutive failed probes
	successes int // consecutive successful probes
	// heldUntil keeps a gateway that answered 503 with Retry-After out
	// until then, whatever the probes say.
	heldUntil time.Time
	// holdDown brings a gateway taken out by a call back when probing is off.
	holdDown *time.Timer
}

func (g *gatewayState) transport() string { return strings.ToUpper(g.cfg.Transport) }

// gatewayGroup selects gateways by policy among those up.
type gatewayGroup struct {
	name     string
	policy   string
	gateways []*gatewayState
	rr       atomic.Uint64

	// weighted keeps smooth weighted round-robin state (the nginx algorithm):
	// picks follow the weights exactly over every cycle, deterministically.
	mu      sync.Mutex
	current map[*gatewayState]int
}

func newGatewayGroups(cfgs []GatewayGroup, m *metrics) map[string]*gatewayGroup {
	groups := make(map[string]*gatewayGroup, len(cfgs))
	for _, c := range cfgs {
		g := &gatewayGroup{name: c.Name, policy: c.Policy, current: map[*gatewayState]int{}}
		policy := newFailurePolicy(c.Failure)
		for _, gw := range c.Gateways {
			host, portStr, _ := net.SplitHostPort(gw.Addr)
			port, _ := strconv.Atoi(portStr)
			st := &gatewayState{cfg: gw, group: c.Name, host: host, port: port, policy: policy}
			// Gateways start up: refusing calls until the first probe returns
			// would turn every restart into an outage.
			st.up.Store(true)
			m.gatewayUp.WithLabelValues(c.Name, gw.Name).Set(1)
			for _, reason := range callFailureReasons {
				m.gatewayFailures.WithLabelValues(c.Name, gw.Name, reason)
				m.gatewayDowns.WithLabelValues(c.Name, gw.Name, reason)
			}
			m.gatewayDowns.WithLabelValues(c.Name, gw.Name, reasonProbe)
			g.gateways = append(g.gateways, st)
		}
		groups[c.Name] = g
	}
	return groups
}

// candidates returns the gateways that are up, in the order to try them: the
// policy's pick first, then the others as failover.
func (g *gatewayGroup) candidates(callID string) []*gatewayState {
	up := make([]*gatewayState, 0, len(g.gateways))
	for _, gw := range g.gateways {
		if gw.up.Load() {
			up = append(up, gw)
		}
	}
	if len(up) <= 1 {
		return up
	}
	var first int
	switch g.policy {
	case PolicyHash:
		h := fnv.New32a()
		h.Write([]byte(callID))
		first = int(h.Sum32() % uint32(len(up)))
	case PolicyWeighted:
		return g.weightedOrder(up)
	default:
		first = int((g.rr.Add(1) - 1) % uint64(len(up)))
	}
	return append(up[first:], up[:first]...)
}

func (g *gatewayGroup) weightedOrder(up []*gatewayState) []*gatewayState {
	g.mu.Lock()
	total := 0
	var best *gatewayState
	for _, gw := range up {
		g.current[gw] += gw.cfg.Weight
		total += gw.cfg.Weight
		if best == nil || g.current[gw] > g.current[best] {
			best = gw
		}
	}
	g.current[best] -= total
	g.mu.Unlock()

	rest := make([]*gatewayState, 0, len(up)-1)
	for _, gw := range up {
		if gw != best {
			rest = append(rest, gw)
		}
	}
	slices.SortStableFunc(rest, func(a, b *gatewayState) int { return cmp.Compare(b.cfg.Weight, a.cfg.Weight) })
	return append([]*gatewayState{best}, rest...)
}

// target builds the branch target for a call to user through this gateway.
func (g *gatewayState) target(user string) target {
	return target{
		uri:       sip.Uri{Scheme: "sip", User: user, Host: g.host, Port: g.port},
		dest:      net.JoinHostPort(g.host, strconv.Itoa(g.port)),
		transport: g.transport(),
		gateway:   g,
		mayTryTCP: g.cfg.transportUnset,
	}
}
