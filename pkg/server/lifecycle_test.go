package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/clock"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

func TestNew_ReportsEveryConfigProblem(t *testing.T) {
	_, err := New(Config{
		BindAddress:      "localhost",
		HealthAddress:    "127.0.0.1:http",
		AdminSocket:      "relative.sock",
		ShutdownTimeout:  -time.Second,
		MaintenanceEvery: -1,
	})
	if err == nil {
		t.Fatal("New succeeded, want an error")
	}
	for _, want := range []string{
		"TrustDomain: required", "DataDir: required", "NodeVerifiers: required",
		`BindAddress: "localhost" is not host:port`, `HealthAddress: "127.0.0.1:http": port "http" is not a number`,
		`AdminSocket: "relative.sock" is not an absolute path`, "ShutdownTimeout: -1s is negative", "MaintenanceEvery: -1ns is negative",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestServer_CreatesPrivateDirectories(t *testing.T) {
	base := t.TempDir()
	cfg := testConfig(t, filepath.Join(base, "data"), base)
	srv, _ := start(t, cfg)
	for dir, want := range map[string]os.FileMode{cfg.DataDir: 0o700, filepath.Dir(srv.AdminSocket()): 0o770} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", dir, got, want)
		}
	}
	if err := srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run = %v, want an error", err)
	}
}

func TestServer_ShutdownDoesNotWaitForOpenSyncStreams(t *testing.T) {
	base := t.TempDir()
	cfg := testConfig(t, filepath.Join(base, "data"), base)
	// Were Sync streams left to the graceful stop, shutdown would take this long.
	cfg.ShutdownTimeout = 10 * time.Minute
	srv, stop := start(t, cfg)
	admin := adminConn(t, srv)
	tok, err := adminv1.NewJoinTokenServiceClient(admin).GenerateToken(context.Background(), &adminv1.GenerateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := bundleOf(t, admin)
	authz := tlsconfig.AuthorizeID(agentid.Server(td))
	sv := attest(t, agentv1.NewAgentServiceClient(agentConn(t, srv, tlsconfig.TLSClientConfig(bundle, authz))), tok.GetToken(), newKey(t))
	client := agentv1.NewAgentServiceClient(agentConn(t, srv, tlsconfig.MTLSClientConfig(sv, bundle, authz)))
	stream, err := client.Sync(context.Background(), &agentv1.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	stop() // fails the test if Run takes longer than 20s
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Sync after shutdown = %v, want Unavailable", err)
	}
}

func TestMaintenance_PrunesTombstonesOlderThanTheRetention(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := &maintenance{tombstone: time.Hour, clock: clock.NewFake(t0)}
	type step struct {
		at   time.Duration
		rev  int64
		want int64
	}
	steps := []step{
		{0, 10, 0},
		{30 * time.Minute, 20, 0},
		{time.Hour, 30, 10},
		{90 * time.Minute, 40, 20},
		{3 * time.Hour, 50, 40},
	}
	var got []int64
	for _, s := range steps {
		now := t0.Add(s.at)
		m.samples = append(m.samples, revSample{at: now, rev: s.rev})
		got = append(got, m.pruneBefore(now))
	}
	var want []int64
	for _, s := range steps {
		want = append(want, s.want)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("prune revisions (-want +got):\n%s", diff)
	}
	if len(m.samples) > 2 {
		t.Errorf("kept %d samples, want old ones dropped", len(m.samples))
	}
}
