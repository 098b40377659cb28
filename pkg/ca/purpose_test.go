package ca

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nhid/nhid/pkg/svid"
)

func TestSignX509SVID_CarriesThePurposeForEveryCAKind(t *testing.T) {
	want := svid.Purpose{EntryID: "0198f0b2-7c1e-7d3a-9b1c-2f4e5a6b7c8d", Purpose: "reconcile invoices", Owner: "ana@example.org"}
	type setup struct {
		name string
		mod  func(t *testing.T) func(*Config)
	}
	setups := []setup{{"upstream-chained", func(t *testing.T) func(*Config) {
		return withUpstream(newUpstream(t, upstreamOpts{issuing: true}))
	}}}
	for _, kt := range svid.KeyTypes() {
		setups = append(setups, setup{"self-signed " + string(kt), func(*testing.T) func(*Config) {
			return func(cfg *Config) { cfg.KeyType = kt }
		}})
	}
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			e := newEnv(t, testStart)
			c := e.start(t, s.mod(t))
			p := want
			ext := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 7}, Value: []byte{5, 0}}
			chain, err := c.SignX509SVID(context.Background(), X509Params{
				ID: testID, PublicKey: mustKey(t, svid.KeyTypeECP256).Public(), TTL: time.Hour,
				DNSNames: []string{"billing.internal"}, ExtraExtensions: []pkix.Extension{ext}, Purpose: &p,
			})
			if err != nil {
				t.Fatalf("SignX509SVID: %v", err)
			}
			if err := verifyX509(chain, e.x509Bundle(t), e.clock.Now()); err != nil {
				t.Fatalf("the SVID does not verify: %v", err)
			}
			if len(chain) > 1 {
				if err := chain[0].CheckSignatureFrom(chain[1]); err != nil {
					t.Fatalf("CheckSignatureFrom the CA: %v", err)
				}
			}
			got, ok, err := svid.PurposeFromCertificate(chain[0])
			if err != nil || !ok {
				t.Fatalf("PurposeFromCertificate: ok=%v err=%v", ok, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("purpose (-want +got):\n%s", diff)
			}
			if !hasExtension(chain[0], ext.Id) || chain[0].DNSNames[0] != "billing.internal" {
				t.Fatalf("extra extension or DNS name lost next to the purpose")
			}
		})
	}
}

func TestSignX509SVID_WithoutPurposeHasNone(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	chain := signX509(t, c, time.Hour)
	if p, ok, err := svid.PurposeFromCertificate(chain[0]); ok || err != nil {
		t.Fatalf("PurposeFromCertificate = %+v, %v, %v; want none", p, ok, err)
	}
}

func TestSignX509SVID_RejectsABadPurposeAndSignsNothing(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	for name, p := range map[string]svid.Purpose{
		"no entry id":   {Purpose: "x"},
		"invalid UTF-8": {EntryID: "e", Owner: "\xff"},
		"oversized":     {EntryID: "e", Purpose: strings.Repeat("x", svid.MaxPurposeFieldBytes+1)},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.SignX509SVID(context.Background(), X509Params{
				ID: testID, PublicKey: mustKey(t, svid.KeyTypeECP256).Public(), TTL: time.Hour, Purpose: &p,
			})
			if err == nil || !strings.HasPrefix(err.Error(), "purpose: ") {
				t.Fatalf("SignX509SVID: %v, want a purpose error", err)
			}
		})
	}
	if n := testutil.ToFloat64(c.metrics.x509Signed); n != 0 {
		t.Fatalf("%v SVIDs signed, want none", n)
	}
}

func hasExtension(cert *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(oid) {
			return true
		}
	}
	return false
}
