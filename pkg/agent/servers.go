package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/resolver"

	"github.com/nhid/nhid/pkg/telemetry"
)

// Several servers. The agent is given one or more HOST:PORT addresses
// (--server a:8081,b:8081), each of which may be a DNS name standing for
// several servers (a headless Kubernetes Service). A resolver of its own
// turns them into the addresses of every server, and gRPC's pick_first
// policy with a shuffled address list connects to one of them: agents
// spread over the servers, and when an agent's server dies it connects to
// the next, with gRPC's jittered reconnect backoff. The Sync stream then
// resumes from the agent's revision, which is global when the servers
// share an etcd store. Workload API streams are served from the agent's
// own state and never notice.
const (
	// resolverScheme is the scheme of the agent's server target.
	resolverScheme = "nhid-servers"
	// reresolveEvery refreshes DNS names that may gain or lose servers.
	reresolveEvery = 30 * time.Second
	// minReresolve rate-limits the re-resolutions gRPC asks for when a
	// connection fails.
	minReresolve = time.Second
	// lookupTimeout bounds one round of DNS lookups.
	lookupTimeout = 10 * time.Second
)

// serviceConfig shuffles the address list once per resolution, so that
// agents do not all connect to the first server.
const serviceConfig = `{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}`

// connectParams bound how long a dead server delays the move to another:
// a dial gives up after 10 s (5 s is too short on a busy node) and retries
// back off, with jitter, up to 10 s.
var connectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 10 * time.Second},
	MinConnectTimeout: 10 * time.Second,
}

// splitServers parses a comma-separated list of HOST:PORT addresses.
func splitServers(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// checkServers validates every address of the list.
func checkServers(s string) error {
	addrs := splitServers(s)
	if len(addrs) == 0 {
		return errors.New("must be set (HOST:PORT, or several separated by commas)")
	}
	var errs []error
	for _, a := range addrs {
		if err := checkHostPort(a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// serverTarget is the gRPC target and the options that connect to any of
// the servers in list.
func serverTarget(list string, log *slog.Logger) (string, []grpc.DialOption) {
	b := &serversBuilder{addrs: splitServers(list), lookup: net.DefaultResolver.LookupHost, log: log}
	return resolverScheme + ":///nhid-server", []grpc.DialOption{
		grpc.WithResolvers(b),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithConnectParams(connectParams),
	}
}

// serversBuilder builds the resolver of one client connection.
type serversBuilder struct {
	addrs  []string
	lookup func(ctx context.Context, host string) ([]string, error)
	log    *slog.Logger
}

func (b *serversBuilder) Scheme() string { return resolverScheme }

func (b *serversBuilder) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &serversResolver{b: b, cc: cc, cancel: cancel, now: make(chan struct{}, 1), done: make(chan struct{})}
	go r.run(ctx)
	return r, nil
}

// serversResolver resolves the server list now, on gRPC's request (a
// connection failed) and every reresolveEvery.
type serversResolver struct {
	b      *serversBuilder
	cc     resolver.ClientConn
	cancel context.CancelFunc
	now    chan struct{}
	done   chan struct{}
	once   sync.Once
	last   []string
}

func (r *serversResolver) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case r.now <- struct{}{}:
	default:
	}
}

func (r *serversResolver) Close() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
	})
}

func (r *serversResolver) run(ctx context.Context) {
	defer close(r.done)
	ticker := time.NewTicker(reresolveEvery)
	defer ticker.Stop()
	for {
		r.resolve(ctx)
		// A burst of failing connections asks for many re-resolutions;
		// one a second is plenty.
		select {
		case <-ctx.Done():
			return
		case <-time.After(minReresolve):
		}
		select {
		case <-ctx.Done():
			return
		case <-r.now:
		case <-ticker.C:
		}
	}
}

// resolve looks every host up and hands the addresses to gRPC. When every
// lookup fails, the addresses resolved before are kept: a DNS outage must
// not disconnect an agent from servers that still run.
func (r *serversResolver) resolve(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := resolveServers(ctx, r.b.addrs, r.b.lookup)
	if len(addrs) == 0 {
		if r.last == nil && ctx.Err() == nil {
			r.cc.ReportError(fmt.Errorf("resolve nhid-server addresses: %w", err))
		}
		return
	}
	if err != nil {
		r.b.log.Warn("some nhid-server addresses do not resolve", telemetry.Error, err.Error())
	}
	if slices.Equal(addrs, r.last) {
		return
	}
	r.last = addrs
	state := resolver.State{}
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	if err := r.cc.UpdateState(state); err != nil && ctx.Err() == nil {
		r.b.log.Warn("update nhid-server addresses", telemetry.Error, err.Error())
	}
}

// resolveServers turns HOST:PORT addresses into IP:PORT ones, sorted and
// without repeats; err reports the hosts that did not resolve.
func resolveServers(ctx context.Context, hostPorts []string, lookup func(context.Context, string) ([]string, error)) ([]string, error) {
	var out []string
	var errs []error
	for _, hp := range hostPorts {
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			out = append(out, net.JoinHostPort(ip.String(), port))
			continue
		}
		ips, err := lookup(ctx, host)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", host, err))
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), errors.Join(errs...)
}
