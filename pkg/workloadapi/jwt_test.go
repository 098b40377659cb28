package workloadapi

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nhid/nhid/pkg/svid"
)

func TestFetchJWTSVID_ReturnsATokenForEveryIdentityThatValidates(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(
		env.mgr.identity("e1", "spiffe://example.org/web", "internal", selfSelector()),
		env.mgr.identity("e2", "spiffe://example.org/api", "external", selfSelector()),
	)
	client := env.srv.client(t)
	ctx := testContext(t)

	svids, err := client.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: "db", ExtraAudiences: []string{"cache"}})
	if err != nil {
		t.Fatalf("FetchJWTSVIDs: %v", err)
	}
	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	type view struct{ ID, Hint, Purpose string }
	var got []view
	for _, s := range svids {
		valid, err := jwtsvid.ParseAndValidate(s.Marshal(), bundles, []string{"cache"})
		if err != nil {
			t.Fatalf("JWT-SVID for %s does not validate against the served bundles: %v", s.ID, err)
		}
		got = append(got, view{valid.ID.String(), s.Hint, valid.Claims["purpose"].(string)})
	}
	want := []view{
		{"spiffe://example.org/web", "internal", "test workload e1"},
		{"spiffe://example.org/api", "external", "test workload e2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JWT-SVIDs (-want +got):\n%s", diff)
	}
}

func TestFetchJWTSVID_SPIFFEIDSelectsOneIdentity(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(
		env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()),
		env.mgr.identity("e2", "spiffe://example.org/api", "", selfSelector()),
		env.mgr.identity("e3", "spiffe://example.org/not-mine", "", "unix:uid:424242"),
	)
	client := env.srv.rawClient(t)
	tests := []struct {
		name     string
		spiffeID string
		wantIDs  []string
		wantCode codes.Code
	}{
		{"entitled", "spiffe://example.org/api", []string{"spiffe://example.org/api"}, codes.OK},
		{"not entitled", "spiffe://example.org/not-mine", nil, codes.PermissionDenied},
		{"unknown", "spiffe://example.org/nobody", nil, codes.PermissionDenied},
		{"malformed", "https://example.org/api", nil, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.FetchJWTSVID(withHeader(testContext(t)),
				&workload.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: tt.spiffeID})
			if code := status.Code(err); code != tt.wantCode {
				t.Fatalf("FetchJWTSVID: %v, want code %v", err, tt.wantCode)
			}
			var ids []string
			for _, s := range resp.GetSvids() {
				ids = append(ids, s.GetSpiffeId())
			}
			if diff := cmp.Diff(tt.wantIDs, ids); diff != "" {
				t.Errorf("JWT-SVIDs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFetchJWTSVID_AudienceTheServerWouldRefuseIsInvalidArgument: the
// server refuses to mint for more than svid.MaxJWTAudiences audiences or
// one longer than svid.MaxJWTAudienceLen. Relayed as a failed mint, that
// reached the workload as Unavailable, which clients retry with backoff for
// ever (SPIFFE Workload Endpoint §6); it is InvalidArgument, decided before
// any mint.
func TestFetchJWTSVID_AudienceTheServerWouldRefuseIsInvalidArgument(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	raw := env.srv.rawClient(t)
	many := make([]string, svid.MaxJWTAudiences+1)
	for i := range many {
		many[i] = fmt.Sprintf("aud-%d", i)
	}
	tests := []struct {
		name     string
		audience []string
		wantCode codes.Code
		wantMsg  string
	}{
		{"as many audiences as allowed", many[:svid.MaxJWTAudiences], codes.OK, ""},
		{"one audience too many", many, codes.InvalidArgument, "audience has 17 distinct values, at most 16 allowed"},
		{"one audience repeated beyond the bound", slices.Repeat([]string{"db"}, svid.MaxJWTAudiences+1), codes.OK, ""},
		{"audience of the longest length", []string{strings.Repeat("a", svid.MaxJWTAudienceLen)}, codes.OK, ""},
		{"audience one byte too long", []string{"db", strings.Repeat("a", svid.MaxJWTAudienceLen+1)}, codes.InvalidArgument, "audience[1] is 257 bytes, at most 256 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.mgr.jwtCallCount()
			_, err := raw.FetchJWTSVID(withHeader(testContext(t)), &workload.JWTSVIDRequest{Audience: tt.audience})
			if tt.wantCode == codes.OK {
				if err != nil {
					t.Fatalf("FetchJWTSVID: %v", err)
				}
				return
			}
			assertStatus(t, err, tt.wantCode, tt.wantMsg)
			if got := env.mgr.jwtCallCount() - before; got != 0 {
				t.Errorf("JWT-SVIDs minted for a refused request: %d", got)
			}
		})
	}
}

func TestFetchJWTSVID_WithoutAudienceIsInvalidArgument(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	raw := env.srv.rawClient(t)
	tests := []struct {
		name     string
		audience []string
		wantMsg  string
	}{
		{"no audience", nil, "audience must be specified"},
		{"empty audience", []string{""}, "audience[0] is empty"},
		{"one empty among others", []string{"db", ""}, "audience[1] is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := raw.FetchJWTSVID(withHeader(testContext(t)), &workload.JWTSVIDRequest{Audience: tt.audience})
			assertStatus(t, err, codes.InvalidArgument, tt.wantMsg)
		})
	}
	t.Run("go-spiffe client without audience", func(t *testing.T) {
		_, err := env.srv.client(t).FetchJWTSVID(testContext(t), jwtsvid.Params{})
		if code := status.Code(err); code != codes.InvalidArgument {
			t.Fatalf("FetchJWTSVID: %v, want InvalidArgument", err)
		}
	})
	if got := env.mgr.jwtCallCount(); got != 0 {
		t.Errorf("JWT-SVIDs minted for invalid requests: %d", got)
	}
}

func TestFetchJWTSVID_MintFailureIsUnavailableWithoutTheCause(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	env.mgr.setJWTError(errors.New("server 10.0.0.7:8081: node evicted"))

	_, err := env.srv.client(t).FetchJWTSVID(testContext(t), jwtsvid.Params{Audience: "db"})
	assertStatus(t, err, codes.Unavailable, "could not issue JWT-SVID")
}

func TestFetchJWTSVID_DropsLaterIdentitiesWithADuplicateHintBeforeMinting(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(
		env.mgr.identity("e1", "spiffe://example.org/a", "shared", selfSelector()),
		env.mgr.identity("e2", "spiffe://example.org/b", "shared", selfSelector()),
		env.mgr.identity("e3", "spiffe://example.org/c", "", selfSelector()),
	)
	resp, err := env.srv.rawClient(t).FetchJWTSVID(withHeader(testContext(t)), &workload.JWTSVIDRequest{Audience: []string{"db"}})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	var ids []string
	for _, s := range resp.GetSvids() {
		ids = append(ids, s.GetSpiffeId()+" "+s.GetHint())
	}
	want := []string{"spiffe://example.org/a shared", "spiffe://example.org/c "}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("JWT-SVIDs (-want +got):\n%s", diff)
	}
	if got := env.mgr.jwtCallCount(); got != 2 {
		t.Errorf("JWT-SVIDs minted = %d, want 2", got)
	}
}

func TestValidateJWTSVID(t *testing.T) {
	env := newX509Env(t)
	// The caller holds no identity: validating needs none.
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", "unix:uid:424242"))
	raw := env.srv.rawClient(t)

	mint := func(ca *testCA, id string, aud []string, ttl time.Duration) string {
		t.Helper()
		token, err := ca.mintJWT(id, aud, "billing agent", ttl)
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	valid := mint(env.ca, "spiffe://example.org/web", []string{"db", "other"}, time.Minute)
	stranger := newTestCA(t, "stranger.example")
	impostor := newTestCA(t, "example.org") // same trust domain, key not in the bundle
	impostor.jwtKID = env.ca.jwtKID

	tests := []struct {
		name        string
		audience    string
		svid        string
		wantCode    codes.Code
		wantMsgPart string
		wantID      string
	}{
		{name: "missing audience", svid: valid, wantCode: codes.InvalidArgument, wantMsgPart: "audience must be specified"},
		{name: "missing svid", audience: "db", wantCode: codes.InvalidArgument, wantMsgPart: "svid must be specified"},
		{name: "garbage", audience: "db", svid: "not.a.jwt", wantCode: codes.InvalidArgument, wantMsgPart: "unable to parse JWT token"},
		{name: "wrong audience", audience: "payments", svid: valid, wantCode: codes.InvalidArgument, wantMsgPart: "expected audience"},
		{name: "expired", audience: "db", svid: mint(env.ca, "spiffe://example.org/web", []string{"db"}, -2*time.Minute), wantCode: codes.InvalidArgument, wantMsgPart: "token has expired"},
		{name: "signed by a key outside the bundle", audience: "db", svid: mint(impostor, "spiffe://example.org/web", []string{"db"}, time.Minute), wantCode: codes.InvalidArgument, wantMsgPart: "unable to get claims from token"},
		{name: "untrusted trust domain", audience: "db", svid: mint(stranger, "spiffe://stranger.example/x", []string{"db"}, time.Minute), wantCode: codes.InvalidArgument, wantMsgPart: "no bundle found"},
		{name: "valid", audience: "db", svid: valid, wantCode: codes.OK, wantID: "spiffe://example.org/web"},
		{name: "valid from a federated trust domain", audience: "db", svid: mint(env.fed, "spiffe://partner.example/batch", []string{"db"}, time.Minute), wantCode: codes.OK, wantID: "spiffe://partner.example/batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := raw.ValidateJWTSVID(withHeader(testContext(t)), &workload.ValidateJWTSVIDRequest{Audience: tt.audience, Svid: tt.svid})
			st := status.Convert(err)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsgPart) {
				t.Fatalf("ValidateJWTSVID: %v %q, want %v containing %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsgPart)
			}
			if tt.wantCode != codes.OK {
				return
			}
			if resp.GetSpiffeId() != tt.wantID {
				t.Errorf("spiffe_id = %q, want %q", resp.GetSpiffeId(), tt.wantID)
			}
			parsed, err := jwtsvid.ParseInsecure(tt.svid, []string{tt.audience})
			if err != nil {
				t.Fatal(err)
			}
			want, err := structpb.NewStruct(parsed.Claims)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, resp.GetClaims(), protoCmp()); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			if got := resp.GetClaims().GetFields()["purpose"].GetStringValue(); got != "billing agent" {
				t.Errorf("purpose claim = %q, want %q", got, "billing agent")
			}
		})
	}

	t.Run("go-spiffe client", func(t *testing.T) {
		svid, err := env.srv.client(t).ValidateJWTSVID(testContext(t), valid, "other")
		if err != nil {
			t.Fatalf("ValidateJWTSVID: %v", err)
		}
		if diff := cmp.Diff("spiffe://example.org/web", svid.ID.String()); diff != "" {
			t.Errorf("ID (-want +got):\n%s", diff)
		}
	})
}

func TestFetchJWTBundles_StreamsJWKSOfOwnAndFederatedTrustDomainsAndTheirChanges(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))

	w := &jwtBundleWatcher{updates: make(chan map[string][]string, 16)}
	ctx := streamContext(t)
	go func() { _ = env.srv.client(t).WatchJWTBundles(ctx, w) }()

	want := map[string][]string{
		"example.org":     {env.ca.jwtKID},
		"partner.example": {env.fed.jwtKID},
	}
	if diff := cmp.Diff(want, w.next(t)); diff != "" {
		t.Fatalf("first JWT bundles (-want +got):\n%s", diff)
	}

	own := env.ca.bundle(t)
	if err := own.AddJWTAuthority("next-key", newKey(t).Public()); err != nil {
		t.Fatal(err)
	}
	env.mgr.setBundles(own, env.fed.bundle(t))
	want["example.org"] = []string{env.ca.jwtKID, "next-key"}
	if diff := cmp.Diff(want, w.next(t)); diff != "" {
		t.Fatalf("JWT bundles after a new key (-want +got):\n%s", diff)
	}
}

// jwtBundleWatcher collects WatchJWTBundles updates as
// trust domain name → sorted key ids.
type jwtBundleWatcher struct {
	updates chan map[string][]string
}

func (w *jwtBundleWatcher) OnJWTBundlesUpdate(set *jwtbundle.Set) {
	out := map[string][]string{}
	for _, b := range set.Bundles() {
		var kids []string
		for kid := range b.JWTAuthorities() {
			kids = append(kids, kid)
		}
		slices.Sort(kids)
		out[b.TrustDomain().Name()] = kids
	}
	w.updates <- out
}

func (w *jwtBundleWatcher) OnJWTBundlesWatchError(error) {}

func (w *jwtBundleWatcher) next(t *testing.T) map[string][]string {
	t.Helper()
	select {
	case b := <-w.updates:
		return b
	case <-time.After(waitTimeout):
		t.Fatalf("no JWT bundles update within %v", waitTimeout)
		return nil
	}
}
