package workloadapi

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// x509Env is a server whose manager serves this test process's uid.
type x509Env struct {
	ca, fed *testCA
	mgr     *testManager
	srv     *testServer
}

func newX509Env(t *testing.T) *x509Env {
	t.Helper()
	ca := newTestCA(t, "example.org")
	fed := newTestCA(t, "partner.example")
	mgr := newTestManager(t, ca)
	mgr.setBundles(ca.bundle(t), fed.bundle(t))
	srv := startServer(t, serverOptions{manager: mgr, attestor: &uidAttestor{}})
	return &x509Env{ca: ca, fed: fed, mgr: mgr, srv: srv}
}

func TestFetchX509Context_ReturnsEveryIdentityAndBundlesThatVerifyIt(t *testing.T) {
	env := newX509Env(t)
	web := env.mgr.identity("e1", "spiffe://example.org/web", "internal", selfSelector())
	api := env.mgr.identity("e2", "spiffe://example.org/api", "external", selfSelector())
	other := env.mgr.identity("e3", "spiffe://example.org/other", "", "unix:uid:424242")
	env.mgr.setIdentities(web, api, other)

	got, err := env.srv.client(t).FetchX509Context(testContext(t))
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}

	type svidView struct {
		ID    string
		Hint  string
		Chain [][]byte
	}
	var gotSVIDs []svidView
	for _, s := range got.SVIDs {
		gotSVIDs = append(gotSVIDs, svidView{s.ID.String(), s.Hint, rawCerts(s.Certificates)})
		if _, _, err := x509svid.Verify(s.Certificates, got.Bundles); err != nil {
			t.Errorf("SVID %s does not verify against the served bundles: %v", s.ID, err)
		}
	}
	want := []svidView{
		{"spiffe://example.org/web", "internal", rawCerts(web.Certificates)},
		{"spiffe://example.org/api", "external", rawCerts(api.Certificates)},
	}
	if diff := cmp.Diff(want, gotSVIDs); diff != "" {
		t.Errorf("SVIDs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want[0].ID, got.DefaultSVID().ID.String()); diff != "" {
		t.Errorf("default SVID (-want +got):\n%s", diff)
	}

	wantBundles := map[string][][]byte{
		"example.org":     rawCerts([]*x509.Certificate{env.ca.root}),
		"partner.example": rawCerts([]*x509.Certificate{env.fed.root}),
	}
	gotBundles := map[string][][]byte{}
	for _, b := range got.Bundles.Bundles() {
		gotBundles[b.TrustDomain().Name()] = rawCerts(b.X509Authorities())
	}
	if diff := cmp.Diff(wantBundles, gotBundles); diff != "" {
		t.Errorf("bundles (-want +got):\n%s", diff)
	}
}

func TestFetchX509SVID_SendsKeyAsPKCS8AndFederatedBundlesByTrustDomainID(t *testing.T) {
	env := newX509Env(t)
	web := env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector())
	env.mgr.setIdentities(web)

	stream, err := env.srv.rawClient(t).FetchX509SVID(withHeader(testContext(t)), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	wantKey, err := x509.MarshalPKCS8PrivateKey(web.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	want := &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{{
			SpiffeId:    "spiffe://example.org/web",
			X509Svid:    append(append([]byte(nil), web.Certificates[0].Raw...), web.Certificates[1].Raw...),
			X509SvidKey: wantKey,
			Bundle:      env.ca.root.Raw,
		}},
		FederatedBundles: map[string][]byte{"spiffe://partner.example": env.fed.root.Raw},
	}
	if diff := cmp.Diff(want, resp, protoCmp()); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
}

func TestWatchX509Context_ReceivesRotationsAdditionsAndWithdrawals(t *testing.T) {
	env := newX509Env(t)
	web := env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector())
	env.mgr.setIdentities(web)

	w := newX509Watcher()
	ctx := streamContext(t)
	go func() { _ = env.srv.client(t).WatchX509Context(ctx, w) }()

	steps := []struct {
		name    string
		publish func() []Identity
	}{
		{"initial", func() []Identity { return []Identity{web} }},
		{"rotation", func() []Identity {
			rotated := env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector())
			env.mgr.setIdentities(rotated)
			return []Identity{rotated}
		}},
		{"addition", func() []Identity {
			rotated := env.mgr.Current(selfSet()).Identities[0]
			api := env.mgr.identity("e2", "spiffe://example.org/api", "", selfSelector())
			env.mgr.setIdentities(rotated, api)
			return []Identity{rotated, api}
		}},
		{"withdrawal", func() []Identity {
			api := env.mgr.Current(selfSet()).Identities[1]
			env.mgr.setIdentities(api)
			return []Identity{api}
		}},
	}
	for _, step := range steps {
		want := leafSerials(step.publish())
		got := w.next(t)
		if diff := cmp.Diff(want, svidSerials(got)); diff != "" {
			t.Fatalf("%s: SVID serials (-want +got):\n%s", step.name, diff)
		}
	}
}

func TestFetchX509SVID_UpdateThatChangesNothingX509SendsNoMessage(t *testing.T) {
	env := newX509Env(t)
	web := env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector())
	env.mgr.setIdentities(web)
	stream, err := env.srv.rawClient(t).FetchX509SVID(withHeader(streamContext(t)), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	msgs := receiveAll(stream)
	if _, err := next(t, msgs); err != nil {
		t.Fatalf("first message: %v", err)
	}

	// A new JWT key changes the bundle, but nothing an X.509 stream carries.
	own := env.ca.bundle(t)
	if err := own.AddJWTAuthority("another-key", newKey(t).Public()); err != nil {
		t.Fatal(err)
	}
	env.mgr.setBundles(own, env.fed.bundle(t))
	// Let the stream take that update on its own, so it cannot be merged
	// with the next one.
	env.mgr.waitDrained(t)
	rotated := env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector())
	env.mgr.setIdentities(rotated)

	resp, err := next(t, msgs)
	if err != nil {
		t.Fatalf("second message: %v", err)
	}
	if diff := cmp.Diff(rotated.Certificates[0].Raw, leafOf(t, resp.GetSvids()[0])); diff != "" {
		t.Errorf("the message after the JWT-only change is not the rotation (-want +got):\n%s", diff)
	}
}

func TestFetchX509SVID_WithdrawingEveryIdentityEndsStreamWithPermissionDenied(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	stream, err := env.srv.rawClient(t).FetchX509SVID(withHeader(streamContext(t)), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	msgs := receiveAll(stream)
	if _, err := next(t, msgs); err != nil {
		t.Fatalf("first message: %v", err)
	}

	env.mgr.setIdentities()

	_, err = next(t, msgs)
	assertStatus(t, err, codes.PermissionDenied, "no identity issued")
	waitFor(t, "the subscription to close", func() bool { return env.mgr.openSubscriptions() == 0 })
}

func TestFetchX509SVID_ClientLeavingClosesSubscription(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	ctx, cancel := context.WithCancel(withHeader(testContext(t)))
	defer cancel()
	stream, err := env.srv.rawClient(t).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if got := env.mgr.openSubscriptions(); got != 1 {
		t.Fatalf("open subscriptions while streaming = %d, want 1", got)
	}
	// Leaving: the client cancels the call, as go-spiffe's FetchX509Context
	// does after the first message.
	cancel()
	waitFor(t, "the subscription to close", func() bool { return env.mgr.openSubscriptions() == 0 })
}

func TestFetchX509SVID_DropsLaterIdentitiesWithADuplicateHint(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(
		env.mgr.identity("e1", "spiffe://example.org/a", "shared", selfSelector()),
		env.mgr.identity("e2", "spiffe://example.org/b", "shared", selfSelector()),
		env.mgr.identity("e3", "spiffe://example.org/c", "", selfSelector()),
		env.mgr.identity("e4", "spiffe://example.org/d", "", selfSelector()),
	)
	got, err := env.srv.client(t).FetchX509Context(testContext(t))
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}
	var ids []string
	for _, s := range got.SVIDs {
		ids = append(ids, s.ID.String())
	}
	want := []string{"spiffe://example.org/a", "spiffe://example.org/c", "spiffe://example.org/d"}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("SVIDs (-want +got):\n%s", diff)
	}
}

func TestFetchX509SVID_LeavesOutAnIdentityWhoseKeyDoesNotMatch(t *testing.T) {
	env := newX509Env(t)
	good := env.mgr.identity("e1", "spiffe://example.org/good", "", selfSelector())
	bad := env.mgr.identity("e2", "spiffe://example.org/bad", "", selfSelector())
	bad.PrivateKey = newKey(t)

	tests := []struct {
		name     string
		ids      []Identity
		wantIDs  []string
		wantCode codes.Code
	}{
		{"others are still served", []Identity{bad, good}, []string{"spiffe://example.org/good"}, codes.OK},
		{"none left is Unavailable, not a denial", []Identity{bad}, nil, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env.mgr.setIdentities(tt.ids...)
			got, err := env.srv.client(t).FetchX509SVIDs(testContext(t))
			if code := status.Code(err); code != tt.wantCode {
				t.Fatalf("FetchX509SVIDs: code %v (%v), want %v", code, err, tt.wantCode)
			}
			var ids []string
			for _, s := range got {
				ids = append(ids, s.ID.String())
			}
			if diff := cmp.Diff(tt.wantIDs, ids); diff != "" {
				t.Errorf("SVIDs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFetchX509Bundles_StreamsOwnAndFederatedBundlesAndTheirChanges(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))

	w := &x509BundleWatcher{updates: make(chan map[string][][]byte, 16)}
	ctx := streamContext(t)
	go func() { _ = env.srv.client(t).WatchX509Bundles(ctx, w) }()

	want := map[string][][]byte{
		"example.org":     rawCerts([]*x509.Certificate{env.ca.root}),
		"partner.example": rawCerts([]*x509.Certificate{env.fed.root}),
	}
	if diff := cmp.Diff(want, w.next(t)); diff != "" {
		t.Fatalf("first bundles (-want +got):\n%s", diff)
	}

	// A new root is published ahead of a CA rotation.
	nextCA := newTestCA(t, "example.org")
	own := env.ca.bundle(t)
	own.AddX509Authority(nextCA.root)
	env.mgr.setBundles(own, env.fed.bundle(t))

	want["example.org"] = rawCerts([]*x509.Certificate{env.ca.root, nextCA.root})
	if diff := cmp.Diff(want, w.next(t)); diff != "" {
		t.Fatalf("bundles after the new root (-want +got):\n%s", diff)
	}
}

func selfSet() selector.Set { return selector.NewSet(selector.Must(selfSelector())) }

func rawCerts(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

func leafSerials(ids []Identity) []string {
	var out []string
	for _, id := range ids {
		out = append(out, id.Certificates[0].SerialNumber.String())
	}
	return out
}

func svidSerials(c *spiffewl.X509Context) []string {
	var out []string
	for _, s := range c.SVIDs {
		out = append(out, s.Certificates[0].SerialNumber.String())
	}
	return out
}

func leafOf(t *testing.T, s *workload.X509SVID) []byte {
	t.Helper()
	certs, err := x509.ParseCertificates(s.GetX509Svid())
	if err != nil || len(certs) == 0 {
		t.Fatalf("parse x509_svid: %v", err)
	}
	return certs[0].Raw
}

func assertStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code || st.Message() != msg {
		t.Fatalf("status = %v %q, want %v %q", st.Code(), st.Message(), code, msg)
	}
}

func TestFetchX509SVID_EndsWithUnavailableWhenTheManagerStops(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	stream, err := env.srv.rawClient(t).FetchX509SVID(withHeader(streamContext(t)), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	msgs := receiveAll(stream)
	if _, err := next(t, msgs); err != nil {
		t.Fatalf("first message: %v", err)
	}

	env.mgr.closeSubscriptions()

	_, err = next(t, msgs)
	assertStatus(t, err, codes.Unavailable, "identity updates ended; reconnect")
}
