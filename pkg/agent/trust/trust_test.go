package trust

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/agent/internal/agenttest"
	"github.com/nhid/nhid/pkg/clock"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestFromProto(t *testing.T) {
	valid := agenttest.NewCA(t, td, clock.Real()).Bundle()
	valid.RefreshHint, valid.SequenceNumber = 300, 9
	mod := func(f func(b *typesv1.Bundle)) *typesv1.Bundle {
		b := proto.Clone(valid).(*typesv1.Bundle)
		f(b)
		return b
	}
	tests := []struct {
		name    string
		in      *typesv1.Bundle
		wantErr string
	}{
		{"valid", valid, ""},
		{"missing", nil, "bundle: missing"},
		{"other trust domain", mod(func(b *typesv1.Bundle) { b.TrustDomain = "other.org" }), "bundle.trust_domain"},
		{"no X.509 authority", mod(func(b *typesv1.Bundle) { b.X509Authorities = nil }), "bundle.x509_authorities: must not be empty"},
		{"bad X.509 authority", mod(func(b *typesv1.Bundle) { b.X509Authorities[0].Asn1 = []byte("x") }), "bundle.x509_authorities[0]"},
		{"JWT key without id", mod(func(b *typesv1.Bundle) { b.JwtAuthorities[0].KeyId = "" }), "bundle.jwt_authorities[0].key_id"},
		{"bad JWT key", mod(func(b *typesv1.Bundle) { b.JwtAuthorities[0].PublicKey = []byte("x") }), "bundle.jwt_authorities[0].public_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromProto(td, tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromProto: %v", err)
			}
			hint, _ := got.RefreshHint()
			seq, _ := got.SequenceNumber()
			if len(got.X509Authorities()) != 1 || len(got.JWTAuthorities()) != 1 || hint != 300*time.Second || seq != 9 {
				t.Errorf("bundle = %d X.509, %d JWT, hint %v, seq %d; want 1, 1, 5m, 9",
					len(got.X509Authorities()), len(got.JWTAuthorities()), hint, seq)
			}
		})
	}
}

func TestFederatedFromProto(t *testing.T) {
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	valid := agenttest.NewCA(t, partner, clock.Real()).Bundle()
	valid.RefreshHint, valid.SequenceNumber = 60, 4
	mod := func(f func(b *typesv1.Bundle)) *typesv1.Bundle {
		b := proto.Clone(valid).(*typesv1.Bundle)
		f(b)
		return b
	}
	tests := []struct {
		name      string
		in        *typesv1.Bundle
		wantErr   string
		wantX509  int
		wantJWT   int
		wantOwnTD bool
	}{
		{name: "valid", in: valid, wantX509: 1, wantJWT: 1},
		{name: "JWT authorities only", in: mod(func(b *typesv1.Bundle) { b.X509Authorities = nil }), wantJWT: 1},
		{name: "X.509 authorities only", in: mod(func(b *typesv1.Bundle) { b.JwtAuthorities = nil }), wantX509: 1},
		{name: "missing", in: nil, wantErr: "bundle: missing"},
		{name: "no authority at all", in: mod(func(b *typesv1.Bundle) { b.X509Authorities, b.JwtAuthorities = nil, nil })},
		{name: "own trust domain", in: mod(func(b *typesv1.Bundle) { b.TrustDomain = "example.org" }), wantErr: "bundle.trust_domain", wantOwnTD: true},
		{name: "empty trust domain", in: mod(func(b *typesv1.Bundle) { b.TrustDomain = "" }), wantErr: "bundle.trust_domain"},
		{name: "trust domain as a SPIFFE ID", in: mod(func(b *typesv1.Bundle) { b.TrustDomain = "spiffe://partner.test" }), wantErr: "bundle.trust_domain"},
		{name: "upper-case trust domain", in: mod(func(b *typesv1.Bundle) { b.TrustDomain = "Partner.test" }), wantErr: "bundle.trust_domain"},
		{name: "bad X.509 authority", in: mod(func(b *typesv1.Bundle) { b.X509Authorities[0].Asn1 = []byte("x") }), wantErr: "bundle.x509_authorities[0]"},
		{name: "bad JWT key", in: mod(func(b *typesv1.Bundle) { b.JwtAuthorities[0].PublicKey = []byte("x") }), wantErr: "bundle.jwt_authorities[0].public_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FederatedFromProto(td, tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrOwnTrustDomain) != tt.wantOwnTD {
					t.Errorf("errors.Is(err, ErrOwnTrustDomain) = %v, want %v", !tt.wantOwnTD, tt.wantOwnTD)
				}
				return
			}
			if err != nil {
				t.Fatalf("FederatedFromProto: %v", err)
			}
			seq, _ := got.SequenceNumber()
			if got.TrustDomain() != partner || len(got.X509Authorities()) != tt.wantX509 || len(got.JWTAuthorities()) != tt.wantJWT || seq != 4 {
				t.Errorf("bundle = %s with %d X.509, %d JWT, seq %d; want partner.test, %d, %d, 4",
					got.TrustDomain(), len(got.X509Authorities()), len(got.JWTAuthorities()), seq, tt.wantX509, tt.wantJWT)
			}
		})
	}
}

func TestPEM_RoundTripAndSource(t *testing.T) {
	b, err := FromProto(td, agenttest.NewCA(t, td, clock.Real()).Bundle())
	if err != nil {
		t.Fatal(err)
	}
	var src Source
	if _, err := src.GetX509BundleForTrustDomain(td); err == nil {
		t.Error("empty Source returned a bundle")
	}
	src.Set(b)
	path := filepath.Join(t.TempDir(), "bundle.pem")
	if err := WritePEM(path, &src, td); err != nil {
		t.Fatalf("WritePEM: %v", err)
	}
	got, err := ReadPEM(td, path)
	if err != nil {
		t.Fatalf("ReadPEM: %v", err)
	}
	if !got.Equal(b.X509Bundle()) {
		t.Error("bundle read back differs from the one written")
	}
}

func TestReadPEM_Refusals(t *testing.T) {
	tests := []struct{ name, content, wantErr string }{
		{"empty", "", "no PEM certificate"},
		{"key instead of certificate", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", `"PRIVATE KEY", want CERTIFICATE`},
		{"broken certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "certificate 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.pem")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadPEM(td, path); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ReadPEM = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	if _, err := ReadPEM(td, "/no/such/file"); err == nil {
		t.Error("ReadPEM of a missing file succeeded")
	}
}
