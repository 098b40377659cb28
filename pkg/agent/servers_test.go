package agent

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// fakeDNS answers lookups from a table; unknown names fail.
func fakeDNS(table map[string][]string) func(context.Context, string) ([]string, error) {
	return func(_ context.Context, host string) ([]string, error) {
		if ips, ok := table[host]; ok {
			return ips, nil
		}
		return nil, errors.New("no such host")
	}
}

func TestResolveServers(t *testing.T) {
	dns := fakeDNS(map[string][]string{
		"nhid.svc": {"10.0.0.2", "10.0.0.1"},
		"b.local":  {"10.0.0.2", "fd00::3"},
	})
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr bool
	}{
		{"one address", []string{"127.0.0.1:8081"}, []string{"127.0.0.1:8081"}, false},
		{"a name standing for several servers", []string{"nhid.svc:8081"}, []string{"10.0.0.1:8081", "10.0.0.2:8081"}, false},
		{"names and addresses, repeats dropped", []string{"nhid.svc:8081", "b.local:8081", "10.0.0.1:8081", "[::1]:9"},
			[]string{"10.0.0.1:8081", "10.0.0.2:8081", "[::1]:9", "[fd00::3]:8081"}, false},
		{"a name that does not resolve is reported, the rest kept", []string{"nope.local:1", "nhid.svc:2"}, []string{"10.0.0.1:2", "10.0.0.2:2"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveServers(t.Context(), tc.in, dns)
			if (err != nil) != tc.wantErr {
				t.Errorf("err = %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("addresses (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckServers(t *testing.T) {
	tests := []struct {
		in     string
		wantOK bool
	}{
		{"a:1", true},
		{"a:1, b:2,c:3", true},
		{"", false},
		{" , ", false},
		{"a:1,b", false},
		{"a:1,:2", false},
	}
	for _, tc := range tests {
		if err := checkServers(tc.in); (err == nil) != tc.wantOK {
			t.Errorf("checkServers(%q) = %v, want ok %v", tc.in, err, tc.wantOK)
		}
	}
}

// recordingConn is the resolver's side of a gRPC client connection.
type recordingConn struct {
	resolver.ClientConn
	states chan resolver.State
	errs   chan error
}

func (c *recordingConn) UpdateState(s resolver.State) error { c.states <- s; return nil }
func (c *recordingConn) ReportError(err error)              { c.errs <- err }
func (c *recordingConn) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{}
}

func TestServersResolver_ReresolvesOnRequestAndKeepsTheLastAddressesWhenDNSFails(t *testing.T) {
	table := map[string][]string{"nhid.svc": {"10.0.0.1"}}
	lookups := make(chan struct{}, 10)
	var failing bool
	b := &serversBuilder{addrs: []string{"nhid.svc:8081"}, log: slog.New(slog.DiscardHandler),
		lookup: func(ctx context.Context, host string) ([]string, error) {
			defer func() { lookups <- struct{}{} }()
			if failing {
				return nil, errors.New("dns down")
			}
			return fakeDNS(table)(ctx, host)
		}}
	cc := &recordingConn{states: make(chan resolver.State, 10), errs: make(chan error, 10)}
	r, err := b.Build(resolver.Target{}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	addrs := func(s resolver.State) []string {
		var out []string
		for _, a := range s.Addresses {
			out = append(out, a.Addr)
		}
		return out
	}
	wait := func() resolver.State {
		t.Helper()
		select {
		case s := <-cc.states:
			return s
		case err := <-cc.errs:
			t.Fatalf("resolver reported %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no resolver update within 10s")
		}
		return resolver.State{}
	}
	if diff := cmp.Diff([]string{"10.0.0.1:8081"}, addrs(wait())); diff != "" {
		t.Fatalf("first state (-want +got):\n%s", diff)
	}
	<-lookups
	table["nhid.svc"] = []string{"10.0.0.1", "10.0.0.9"}
	r.ResolveNow(resolver.ResolveNowOptions{})
	if diff := cmp.Diff([]string{"10.0.0.1:8081", "10.0.0.9:8081"}, addrs(wait()), cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("state after a new server appeared (-want +got):\n%s", diff)
	}
	<-lookups
	failing = true
	r.ResolveNow(resolver.ResolveNowOptions{})
	select {
	case <-lookups:
	case <-time.After(10 * time.Second):
		t.Fatal("no lookup after ResolveNow")
	}
	select {
	case s := <-cc.states:
		t.Errorf("a failed lookup replaced the addresses with %v", addrs(s))
	case err := <-cc.errs:
		t.Errorf("a failed lookup with known addresses reported %v", err)
	default:
	}
}
