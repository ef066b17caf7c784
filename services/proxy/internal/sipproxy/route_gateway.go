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

	"github.com/emiago/sipgo/sip"
)

// gatewayState is one gateway and its probed health.
type gatewayState struct {
	cfg   Gateway
	group string
	host  string
	port  int
	// up is read on every call; probing flips it.
	up atomic.Bool
	// probing guards against overlapping probes of one gateway.
	probing atomic.Bool

	mu        sync.Mutex
	fails     int
	successes int
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
		for _, gw := range c.Gateways {
			host, portStr, _ := net.SplitHostPort(gw.Addr)
			port, _ := strconv.Atoi(portStr)
			st := &gatewayState{cfg: gw, group: c.Name, host: host, port: port}
			// Gateways start up: refusing calls until the first probe returns
			// would turn every restart into an outage.
			st.up.Store(true)
			m.gatewayUp.WithLabelValues(c.Name, gw.Name).Set(1)
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
	}
}
