package agentapi

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/agentid"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// mintFixture is a node with entries covering every per-item outcome.
type mintFixture struct {
	h                                    *harness
	a                                    *agent
	own, viaAlias, other, alias, expired *typesv1.Entry
}

func newMintFixture(t *testing.T) *mintFixture {
	h := newHarness(t)
	a := h.attestWithSelectors("minter", "test:zone:a")
	b := h.attest()
	created := h.createEntries(
		&typesv1.Entry{SpiffeId: "spiffe://example.org/web", ParentId: a.id.String(), Selectors: []string{"unix:uid:1000"},
			Purpose: "serves the shop", Owner: "alice@example.org", DnsNames: []string{"web.example.org"}, X509Ttl: 600},
		&typesv1.Entry{SpiffeId: "spiffe://example.org/zone-a", ParentId: agentid.Server(td).String(), Selectors: []string{"test:zone:a"}},
		&typesv1.Entry{SpiffeId: "spiffe://example.org/batch", ParentId: "spiffe://example.org/zone-a", Selectors: []string{"unix:uid:2000"}},
		&typesv1.Entry{SpiffeId: "spiffe://example.org/theirs", ParentId: b.id.String(), Selectors: []string{"unix:uid:1000"}},
		&typesv1.Entry{SpiffeId: "spiffe://example.org/old", ParentId: a.id.String(), Selectors: []string{"unix:uid:3000"},
			ExpiresAt: time.Now().Add(-time.Minute).Unix()},
	)
	return &mintFixture{h: h, a: a, own: created[0], alias: created[1], viaAlias: created[2], other: created[3], expired: created[4]}
}

func TestMintX509SVIDs_ReportsEachItemOnItsOwn(t *testing.T) {
	f := newMintFixture(t)
	key := newKey(t)
	badSig := newCSR(t, newKey(t), "")
	badSig[len(badSig)-1] ^= 0xff
	params := []*agentv1.X509SVIDParams{
		{EntryId: f.own.GetId(), Csr: newCSR(t, key, "spiffe://example.org/admin")},
		{EntryId: "no-such-entry", Csr: newCSR(t, newKey(t), "")},
		{EntryId: f.other.GetId(), Csr: newCSR(t, newKey(t), "")},
		{EntryId: f.alias.GetId(), Csr: newCSR(t, newKey(t), "")},
		{EntryId: f.expired.GetId(), Csr: newCSR(t, newKey(t), "")},
		{EntryId: f.own.GetId(), Csr: badSig},
		{EntryId: "", Csr: newCSR(t, newKey(t), "")},
		{EntryId: f.viaAlias.GetId(), Csr: newCSR(t, newKey(t), "")},
	}
	resp, err := f.a.client.MintX509SVIDs(context.Background(), &agentv1.MintX509SVIDsRequest{Params: params})
	if err != nil {
		t.Fatalf("MintX509SVIDs: %v", err)
	}
	type outcome struct {
		EntryID string
		Code    codes.Code
		Message string
		Signed  bool
	}
	var got []outcome
	for _, r := range resp.GetResults() {
		got = append(got, outcome{r.GetEntryId(), codes.Code(r.GetCode()), r.GetMessage(), len(r.GetSvidChain()) > 0})
	}
	want := []outcome{
		{f.own.GetId(), codes.OK, "", true},
		{"no-such-entry", codes.NotFound, `entry "no-such-entry" not found`, false},
		{f.other.GetId(), codes.PermissionDenied, `entry "` + f.other.GetId() + `" is not authorised for this node`, false},
		{f.alias.GetId(), codes.PermissionDenied, `entry "` + f.alias.GetId() + `" is a node alias; node aliases have no SVIDs`, false},
		{f.expired.GetId(), codes.PermissionDenied, `entry "` + f.expired.GetId() + `" has expired`, false},
		{f.own.GetId(), codes.InvalidArgument, "csr: csr signature: x509: ECDSA verification failure", false},
		{"", codes.InvalidArgument, "entry_id: required", false},
		{f.viaAlias.GetId(), codes.OK, "", true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("results mismatch (-want +got):\n%s", diff)
	}

	// The identity comes from the entry, never from the CSR.
	sv := svidFrom(t, resp.GetResults()[0].GetSvidChain(), key)
	if _, _, err := x509svid.Verify(sv.Certificates, f.h.bundle); err != nil {
		t.Fatalf("minted SVID does not verify: %v", err)
	}
	leaf := sv.Certificates[0]
	gotIdentity := []any{sv.ID.String(), leaf.DNSNames, len(leaf.URIs), resp.GetResults()[0].GetExpiresAt()}
	wantIdentity := []any{"spiffe://example.org/web", []string{"web.example.org"}, 1, leaf.NotAfter.Unix()}
	if diff := cmp.Diff(wantIdentity, gotIdentity); diff != "" {
		t.Errorf("SVID identity mismatch (-want +got):\n%s", diff)
	}
	if ttl := leaf.NotAfter.Sub(leaf.NotBefore); ttl > 10*time.Minute+time.Minute || ttl < 10*time.Minute {
		t.Errorf("SVID lifetime = %v, want the entry's 10m (plus backdating)", ttl)
	}
	row, err := f.h.store.GetIssued(context.Background(), serialHex(leaf))
	if err != nil {
		t.Fatalf("ledger row: %v", err)
	}
	wantRow := &typesv1.IssuedSVID{
		Id: serialHex(leaf), Kind: typesv1.SVIDKind_SVID_KIND_X509, SpiffeId: "spiffe://example.org/web",
		EntryId: f.own.GetId(), Node: f.a.id.String(), Purpose: "serves the shop", Owner: "alice@example.org",
		ExpiresAt: leaf.NotAfter.Unix(),
	}
	if diff := cmp.Diff(wantRow, row, protocmp.Transform(), protocmp.IgnoreFields(&typesv1.IssuedSVID{}, "issued_at")); diff != "" {
		t.Errorf("ledger row mismatch (-want +got):\n%s", diff)
	}
}

func TestMintX509SVIDs_RejectsBatchesOutsideTheLimits(t *testing.T) {
	f := newMintFixture(t)
	csr := newCSR(t, newKey(t), "")
	tooMany := make([]*agentv1.X509SVIDParams, MaxMintBatch+1)
	for i := range tooMany {
		tooMany[i] = &agentv1.X509SVIDParams{EntryId: f.own.GetId(), Csr: csr}
	}
	tests := []struct {
		name    string
		params  []*agentv1.X509SVIDParams
		message string
	}{
		{"empty batch", nil, "params: at least one item is required"},
		{"501 items", tooMany, "params: 501 items, at most 500 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.a.client.MintX509SVIDs(context.Background(), &agentv1.MintX509SVIDsRequest{Params: tt.params})
			wantCode(t, err, codes.InvalidArgument, tt.message)
		})
	}
	// Nothing was signed for the refused batch: the ledger is empty.
	if n, err := f.h.store.PruneIssued(context.Background(), time.Now().Add(48*time.Hour)); err != nil || n != 2 {
		t.Errorf("ledger rows = %d, %v; want only the two agent SVIDs", n, err)
	}
}

func TestMintJWTSVID_IssuesATokenForAnAuthorisedEntry(t *testing.T) {
	f := newMintFixture(t)
	ctx := context.Background()
	resp, err := f.a.client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: f.own.GetId(), Audience: []string{"orders", "billing"}, Ttl: 120})
	if err != nil {
		t.Fatalf("MintJWTSVID: %v", err)
	}
	sv, err := jwtsvid.ParseAndValidate(resp.GetToken(), jwtBundle(t, f.h), []string{"orders"})
	if err != nil {
		t.Fatalf("token does not validate: %v", err)
	}
	gotClaims := []any{sv.ID.String(), sv.Claims["purpose"], sv.Claims["owner"], resp.GetExpiresAt() - resp.GetIssuedAt()}
	wantClaims := []any{"spiffe://example.org/web", "serves the shop", "alice@example.org", int64(120)}
	if diff := cmp.Diff(wantClaims, gotClaims); diff != "" {
		t.Errorf("token mismatch (-want +got):\n%s", diff)
	}
	jti, _ := sv.Claims["jti"].(string)
	row, err := f.h.store.GetIssued(ctx, jti)
	if err != nil {
		t.Fatalf("ledger row by jti %q: %v", jti, err)
	}
	wantRow := &typesv1.IssuedSVID{
		Id: jti, Kind: typesv1.SVIDKind_SVID_KIND_JWT, SpiffeId: "spiffe://example.org/web", EntryId: f.own.GetId(),
		Node: f.a.id.String(), Purpose: "serves the shop", Owner: "alice@example.org",
		IssuedAt: resp.GetIssuedAt(), ExpiresAt: resp.GetExpiresAt(), Audience: []string{"orders", "billing"},
	}
	if diff := cmp.Diff(wantRow, row, protocmp.Transform()); diff != "" {
		t.Errorf("ledger row mismatch (-want +got):\n%s", diff)
	}
}

func TestMintJWTSVID_RejectsBadRequests(t *testing.T) {
	f := newMintFixture(t)
	long := string(make([]byte, 257))
	tests := []struct {
		name    string
		req     *agentv1.MintJWTSVIDRequest
		code    codes.Code
		message string
	}{
		{"no audience", &agentv1.MintJWTSVIDRequest{EntryId: f.own.GetId()}, codes.InvalidArgument, "audience: at least one value is required"},
		{"empty audience value", &agentv1.MintJWTSVIDRequest{EntryId: f.own.GetId(), Audience: []string{"a", ""}}, codes.InvalidArgument, "audience[1]: empty"},
		{"audience too long", &agentv1.MintJWTSVIDRequest{EntryId: f.own.GetId(), Audience: []string{long}}, codes.InvalidArgument, "audience[0]: 257 bytes, at most 256 allowed"},
		{"too many audiences", &agentv1.MintJWTSVIDRequest{EntryId: f.own.GetId(), Audience: make([]string, 17)}, codes.InvalidArgument, "audience: 17 values, at most 16 allowed"},
		{"negative ttl", &agentv1.MintJWTSVIDRequest{EntryId: f.own.GetId(), Audience: []string{"a"}, Ttl: -1}, codes.InvalidArgument, "ttl: -1 is negative"},
		{"ttl above the maximum", &agentv1.MintJWTSVIDRequest{EntryId: f.own.GetId(), Audience: []string{"a"}, Ttl: 86401}, codes.InvalidArgument, "ttl: 86401 s exceeds the maximum of 86400 s"},
		{"missing entry id", &agentv1.MintJWTSVIDRequest{Audience: []string{"a"}}, codes.InvalidArgument, "entry_id: required"},
		{"unknown entry", &agentv1.MintJWTSVIDRequest{EntryId: "nope", Audience: []string{"a"}}, codes.NotFound, `entry "nope" not found`},
		{"entry of another node", &agentv1.MintJWTSVIDRequest{EntryId: f.other.GetId(), Audience: []string{"a"}}, codes.PermissionDenied, "is not authorised for this node"},
		{"alias entry", &agentv1.MintJWTSVIDRequest{EntryId: f.alias.GetId(), Audience: []string{"a"}}, codes.PermissionDenied, "node aliases have no SVIDs"},
		{"expired entry", &agentv1.MintJWTSVIDRequest{EntryId: f.expired.GetId(), Audience: []string{"a"}}, codes.PermissionDenied, "has expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.a.client.MintJWTSVID(context.Background(), tt.req)
			wantCode(t, err, tt.code, tt.message)
		})
	}
}

// jwtBundle is the trust domain's JWT bundle as the store holds it.
func jwtBundle(t *testing.T, h *harness) *jwtbundle.Bundle {
	t.Helper()
	pb, err := h.store.GetBundle(context.Background(), td.Name())
	if err != nil {
		t.Fatal(err)
	}
	b := jwtbundle.New(td)
	for _, a := range pb.GetJwtAuthorities() {
		pub, err := x509.ParsePKIXPublicKey(a.GetPublicKey())
		if err != nil {
			t.Fatal(err)
		}
		b.AddJWTAuthority(a.GetKeyId(), pub)
	}
	return b
}
