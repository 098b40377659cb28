package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nhid/nhid/pkg/jointoken"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestTokenGenerate_JSONShape(t *testing.T) {
	s := newServer(t)
	before := time.Now()
	out := s.mustRun(t, "-o", "json", "token", "generate", "--ttl", "90s")
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if diff := cmp.Diff([]string{"expires_at", "id", "spiffe_id", "token"}, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	tok, err := jointoken.Parse(doc["token"].(string))
	if err != nil {
		t.Fatalf("token does not parse: %v", err)
	}
	if doc["id"] != tok.ID || doc["spiffe_id"] != "spiffe://example.org/nhid/agent/join_token/"+tok.ID {
		t.Errorf("id %v, spiffe_id %v; want both from token id %s", doc["id"], doc["spiffe_id"], tok.ID)
	}
	resp := decode(t, out, &adminv1.GenerateTokenResponse{})
	if exp := time.Unix(resp.GetExpiresAt(), 0); exp.Before(before.Add(89*time.Second)) || exp.After(time.Now().Add(91*time.Second)) {
		t.Errorf("expires_at %v is not 90s from now", exp)
	}
}

func TestTokenGenerate_TablePrintsTokenAndAgentID(t *testing.T) {
	s := newServer(t)
	out := s.mustRun(t, "token", "generate", "--spiffe-id", "spiffe://example.org/nhid/agent/join_token/db-1")
	var token string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Token:"); ok {
			token = strings.TrimSpace(v)
		}
	}
	if _, err := jointoken.Parse(token); err != nil {
		t.Errorf("no usable token in %q: %v", out, err)
	}
	if !strings.Contains(out, "Agent ID:") || !strings.Contains(out, "spiffe://example.org/nhid/agent/join_token/db-1") {
		t.Errorf("output lacks the agent ID:\n%s", out)
	}
	if r := s.run(t, "token", "generate", "--spiffe-id", "spiffe://example.org/db"); r.code != 1 || !strings.Contains(r.stderr, "spiffe_id:") {
		t.Errorf("non-agent ID: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := s.run(t, "token", "generate", "--ttl", "500ms"); r.code != 2 {
		t.Errorf("sub-second ttl: exit %d, want 2", r.code)
	}
}

func TestTokenListAndRevoke(t *testing.T) {
	s := newServer(t)
	if out := s.mustRun(t, "token", "list", "-o", "json"); !strings.Contains(out, `"tokens": []`) {
		t.Errorf("empty token list = %s", out)
	}
	gen := decode(t, s.mustRun(t, "-o", "json", "token", "generate"), &adminv1.GenerateTokenResponse{})
	tok, err := jointoken.Parse(gen.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	list := s.mustRun(t, "token", "list")
	if !strings.Contains(list, gen.GetId()) || !strings.Contains(list, "unused") || strings.Contains(list, tok.Secret) {
		t.Errorf("token list = %q; want the id, state unused, no secret", list)
	}
	if js := s.mustRun(t, "token", "list", "-o", "json"); strings.Contains(js, tok.Secret) {
		t.Errorf("token list -o json holds the secret: %s", js)
	}
	if out := s.mustRun(t, "token", "revoke", gen.GetId()); strings.TrimSpace(out) != "revoked token "+gen.GetId() {
		t.Errorf("revoke output = %q", out)
	}
	if r := s.run(t, "token", "revoke", gen.GetId()); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("second revoke: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestNodeCommands(t *testing.T) {
	s := newServer(t)
	if out := s.mustRun(t, "node", "list"); strings.TrimSpace(out) != "no nodes" {
		t.Errorf("node list on an empty store = %q", out)
	}
	if out := s.mustRun(t, "node", "list", "-o", "json"); !strings.Contains(out, `"nodes": []`) {
		t.Errorf("node list -o json on an empty store = %s", out)
	}
	if _, err := s.store.CreateNode(t.Context(), &typesv1.Node{SpiffeId: agentA, AttestorType: "join_token",
		Status: typesv1.NodeStatus_NODE_STATUS_ACTIVE, AttestedAt: time.Now().Unix()}); err != nil {
		t.Fatal(err)
	}
	list := decode(t, s.mustRun(t, "node", "list", "-o", "json"), &adminv1.ListNodesResponse{})
	if len(list.GetNodes()) != 1 || list.GetNodes()[0].GetSpiffeId() != agentA {
		t.Errorf("node list = %v", list)
	}
	if out := s.mustRun(t, "node", "list"); !strings.Contains(out, agentA) || !strings.Contains(out, "active") {
		t.Errorf("node table = %q", out)
	}
	steps := []struct {
		args   []string
		status string
		code   int
	}{
		{[]string{"node", "show", agentA}, "active", 0},
		{[]string{"node", "evict", agentA}, "evicted", 0},
		{[]string{"node", "ban", agentA}, "banned", 0},
		{[]string{"node", "evict", agentA}, "", 1},
		{[]string{"node", "unban", agentA}, "evicted", 0},
		{[]string{"node", "show", "spiffe://example.org/nhid/agent/x/missing"}, "", 1},
		{[]string{"node", "show", "not-an-id"}, "", 1},
	}
	for _, st := range steps {
		r := s.run(t, st.args...)
		if r.code != st.code || (st.code == 0 && !strings.Contains(r.stdout, "Status:")) || !strings.Contains(r.stdout, st.status) {
			t.Errorf("nhidctl %s: exit %d, stdout %q, stderr %q; want exit %d and status %q",
				strings.Join(st.args, " "), r.code, r.stdout, r.stderr, st.code, st.status)
		}
	}
	shown := decode(t, s.mustRun(t, "-o", "json", "node", "show", agentA), &adminv1.GetNodeResponse{})
	if shown.GetNode().GetStatus() != typesv1.NodeStatus_NODE_STATUS_EVICTED {
		t.Errorf("node after unban = %v", shown.GetNode())
	}
}

// seedBundle stores a self-signed CA and a JWT key, as the CA would.
func seedBundle(t *testing.T, s *server) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "test CA"},
		URIs:      []*url.URL{{Scheme: "spiffe", Host: "example.org"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.UpdateBundle(t.Context(), td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: der}}
		b.JwtAuthorities = []*typesv1.JWTAuthority{{KeyId: "k1", PublicKey: pub}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestBundleShow(t *testing.T) {
	s := newServer(t)
	if r := s.run(t, "bundle", "show"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("bundle show before the CA exists: exit %d, stderr %q", r.code, r.stderr)
	}
	ca := seedBundle(t, s)

	block, rest := pem.Decode([]byte(s.mustRun(t, "bundle", "show")))
	if block == nil || string(block.Bytes) != string(ca.Raw) || strings.TrimSpace(string(rest)) != "" {
		t.Errorf("bundle show (pem) is not exactly the CA certificate")
	}
	jwks := s.mustRun(t, "bundle", "show", "--format", "jwks")
	b, err := spiffebundle.Parse(td, []byte(jwks))
	if err != nil {
		t.Fatalf("bundle show --format jwks does not parse: %v\n%s", err, jwks)
	}
	if len(b.X509Authorities()) != 1 || !b.HasJWTAuthority("k1") {
		t.Errorf("jwks bundle has %d X.509 authorities, JWT k1 %v", len(b.X509Authorities()), b.HasJWTAuthority("k1"))
	}
	resp := decode(t, s.mustRun(t, "-o", "json", "bundle", "show"), &adminv1.GetBundleResponse{})
	if resp.GetPem() == "" || resp.GetJwks() == "" || len(resp.GetBundle().GetX509Authorities()) != 1 {
		t.Errorf("bundle show -o json = %v", resp)
	}
	if r := s.run(t, "bundle", "show", "--format", "der"); r.code != 2 {
		t.Errorf("--format der: exit %d, want 2", r.code)
	}
}

func TestHealthcheck(t *testing.T) {
	s := newServer(t)
	if out := s.mustRun(t, "healthcheck"); strings.TrimSpace(out) != "SERVING" {
		t.Errorf("healthcheck = %q, want SERVING", out)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	r := s.run(t, "healthcheck")
	if r.code != 1 || !strings.Contains(r.stderr, "NOT_SERVING") {
		t.Errorf("healthcheck while not serving: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestUnreachableSocket_SaysWhatToDo(t *testing.T) {
	dir := shortTempDir(t)
	missing := filepath.Join(dir, "missing.sock")
	stale := filepath.Join(dir, "stale.sock")
	// A socket file nobody serves, as left behind by a crashed server.
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		env    string
		args   []string
		socket string
	}{
		{"missing socket from the flag", "", []string{"--socket", missing, "entry", "list"}, missing},
		{"stale socket", "", []string{"--socket", stale, "node", "list"}, stale},
		{"socket from the environment", missing, []string{"token", "list"}, missing},
		{"flag wins over the environment", "/nonexistent/env.sock", []string{"--socket", missing, "healthcheck"}, missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(envAdminSocket, tt.env)
			r := runCLI(t, nil, tt.args...)
			want := "nhidctl: cannot reach nhid-server at " + tt.socket + ": is it running? set --socket or NHID_ADMIN_SOCKET\n"
			if r.code != 1 || r.stderr != want {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, want)
			}
		})
	}
}

func TestDoor_FlagsPickOneWayToTheAdminAPI(t *testing.T) {
	s := newServer(t)
	// An exported remote address does not beat a --socket the user typed.
	t.Setenv(envServerAddress, "192.0.2.1:8444")
	if r := runCLI(t, nil, "--socket", s.socket, "entry", "list"); r.code != 0 {
		t.Fatalf("--socket with %s set: exit %d: %s", envServerAddress, r.code, r.stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", s.socket, "--server", "192.0.2.1:8444", "entry", "list"}, "--socket and --server pick different ways"},
		{[]string{"--socket", s.socket, "--server-id", "spiffe://example.org/nhid/server", "entry", "list"}, "--server-id applies to the admin API over mutual TLS"},
		{[]string{"--socket", s.socket, "--admin-id", "spiffe://example.org/ops/alice", "entry", "list"}, "--admin-id applies"},
	} {
		r := runCLI(t, nil, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("nhidctl %v: exit %d, %q; want exit 2 saying %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}
