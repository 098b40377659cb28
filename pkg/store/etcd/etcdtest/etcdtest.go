// Package etcdtest runs real etcd members (etcd's own server code, through
// go.etcd.io/etcd/server/v3/embed) for tests and for the e2e test's member
// binary: on loopback ports, in temporary directories, with the settings
// docs/ha.md asks of a production cluster (large transactions allowed).
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Settings every member gets: nhid commits a batch of entries in one
// transaction, which etcd's defaults (128 operations, 1.5 MiB) refuse.
const (
	MaxTxnOps       = 16384
	MaxRequestBytes = 16 << 20
)

// startTimeout bounds the wait for a member to join its cluster.
const startTimeout = 30 * time.Second

// ServerTLS makes a member serve clients over TLS.
type ServerTLS struct {
	// CertFile and KeyFile are the member's certificate and key.
	CertFile, KeyFile string
	// ClientCAFile, when set, makes the member require client
	// certificates issued by it.
	ClientCAFile string
}

// MemberConfig describes one member of a cluster.
type MemberConfig struct {
	// Name is unique in the cluster.
	Name string
	// Dir holds the member's data.
	Dir string
	// ClientURL and PeerURL are where the member listens
	// (http://127.0.0.1:PORT, or https for ClientURL with TLS).
	ClientURL, PeerURL string
	// InitialCluster lists every member as name=peerURL, comma-separated.
	// Empty: a cluster of this member alone.
	InitialCluster string
	// TLS secures the client URL.
	TLS *ServerTLS
	// NoFsync trades durability for speed: tests that do not crash the
	// member need no fsync. Never in production.
	NoFsync bool
	// MaxTxnOps overrides the MaxTxnOps setting (etcd's default is 128).
	MaxTxnOps uint
	// LogLevel of the member's own log (stderr); default "fatal": a
	// member logs errors on every ordinary shutdown.
	LogLevel string
}

// Member is one running etcd member.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	etcd      *embed.Etcd
	stop      sync.Once
}

// StartMember starts a member and waits until it has joined its cluster
// (for the first members of a new cluster, until a quorum has started).
func StartMember(mc MemberConfig) (*Member, error) {
	cfg, err := embedConfig(mc)
	if err != nil {
		return nil, err
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd member %s: %w", mc.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd member %s failed: %w", mc.Name, err)
	case <-time.After(startTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcd member %s not ready after %v", mc.Name, startTimeout)
	}
	return &Member{Name: mc.Name, ClientURL: mc.ClientURL, PeerURL: mc.PeerURL, etcd: e}, nil
}

func embedConfig(mc MemberConfig) (*embed.Config, error) {
	cu, err := url.Parse(mc.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("client url: %w", err)
	}
	pu, err := url.Parse(mc.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("peer url: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = mc.Name, mc.Dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = mc.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = mc.Name + "=" + mc.PeerURL
	}
	cfg.InitialClusterToken = "nhid-test"
	cfg.MaxTxnOps, cfg.MaxRequestBytes = MaxTxnOps, MaxRequestBytes
	if mc.MaxTxnOps != 0 {
		cfg.MaxTxnOps = mc.MaxTxnOps
	}
	cfg.UnsafeNoFsync = mc.NoFsync
	cfg.LogLevel = mc.LogLevel
	if cfg.LogLevel == "" {
		cfg.LogLevel = "fatal"
	}
	cfg.LogOutputs = []string{"stderr"}
	// Fast elections keep failover tests short; loopback has no latency.
	cfg.TickMs, cfg.ElectionMs = 50, 500
	if mc.TLS != nil {
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = mc.TLS.CertFile, mc.TLS.KeyFile
		cfg.ClientTLSInfo.TrustedCAFile = mc.TLS.ClientCAFile
		cfg.ClientTLSInfo.ClientCertAuth = mc.TLS.ClientCAFile != ""
	}
	return cfg, nil
}

// Err delivers the error that stops a running member.
func (m *Member) Err() <-chan error { return m.etcd.Err() }

// Stop stops the member gracefully; stopping it again does nothing.
func (m *Member) Stop() {
	m.stop.Do(m.etcd.Close)
}

// Options configures Start.
type Options struct {
	// TLS secures the client URL (https).
	TLS *ServerTLS
	// Fsync keeps etcd's fsyncs (benchmarks comparing with bbolt, which
	// syncs every commit); without it the member skips them.
	Fsync bool
	// MaxTxnOps overrides the MaxTxnOps setting.
	MaxTxnOps uint
}

// Start runs a single-member cluster for tb on free loopback ports and
// stops it with the test.
func Start(tb testing.TB, opts Options) *Member {
	tb.Helper()
	return StartCluster(tb, 1, opts)[0]
}

// StartCluster runs an n-member cluster for tb and stops it with the test.
func StartCluster(tb testing.TB, n int, opts Options) []*Member {
	tb.Helper()
	var last error
	for range 3 { // a free port can be taken between the probe and the bind
		members, err := startCluster(tb.TempDir(), n, opts)
		if err == nil {
			tb.Cleanup(func() {
				for _, m := range members {
					m.Stop()
				}
			})
			return members
		}
		last = err
	}
	tb.Fatalf("start etcd: %v", last)
	return nil
}

func startCluster(dir string, n int, opts Options) ([]*Member, error) {
	scheme := "http"
	if opts.TLS != nil {
		scheme = "https"
	}
	ports, err := FreePorts(2 * n)
	if err != nil {
		return nil, err
	}
	cfgs := make([]MemberConfig, n)
	var initial []string
	for i := range cfgs {
		name := fmt.Sprintf("m%d", i)
		cfgs[i] = MemberConfig{
			Name: name, Dir: filepath.Join(dir, name), TLS: opts.TLS, NoFsync: !opts.Fsync, MaxTxnOps: opts.MaxTxnOps,
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		initial = append(initial, name+"="+cfgs[i].PeerURL)
	}
	// Members of a new cluster wait for each other: start them together.
	members := make([]*Member, n)
	errs := make([]error, n)
	done := make(chan struct{}, n)
	for i := range cfgs {
		cfgs[i].InitialCluster = strings.Join(initial, ",")
		go func() {
			members[i], errs[i] = StartMember(cfgs[i])
			done <- struct{}{}
		}()
	}
	for range n {
		<-done
	}
	if err := errors.Join(errs...); err != nil {
		for _, m := range members {
			if m != nil {
				m.Stop()
			}
		}
		return nil, err
	}
	return members, nil
}

// Endpoints are the members' client URLs.
func Endpoints(members []*Member) []string {
	out := make([]string, len(members))
	for i, m := range members {
		out[i] = m.ClientURL
	}
	return out
}

// FreePorts returns n distinct loopback TCP ports that were free a moment
// ago.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var lis []net.Listener
	defer func() {
		for _, l := range lis {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lis = append(lis, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
