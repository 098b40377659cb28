package agentcache

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func fedBundle(td string, seq uint64) *typesv1.Bundle {
	return &typesv1.Bundle{
		TrustDomain:     td,
		X509Authorities: []*typesv1.X509Authority{{Asn1: []byte("ca-" + td)}},
		JwtAuthorities:  []*typesv1.JWTAuthority{{KeyId: "k-" + td, PublicKey: []byte("pub")}},
		RefreshHint:     300,
		SequenceNumber:  seq,
	}
}

func TestFederatedBundles_PersistAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	c := openCache(t, path)
	set := Change{FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{fedBundle("z.test", 1), fedBundle("partner.test", 4)}}
	if err := c.Apply(set); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := load(t, openCache(t, path)).FederatedBundles
	want := []*typesv1.Bundle{fedBundle("partner.test", 4), fedBundle("z.test", 1)}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("federated bundles after reopen (-want +got):\n%s", diff)
	}
}

func TestFederatedBundles_ApplyReplacesTheSetOnlyWhenSet(t *testing.T) {
	tests := []struct {
		name   string
		change Change
		want   []string // trust domain@sequence
	}{
		{"a change without the set keeps it", Change{Upserts: []*typesv1.Entry{entry("a", 2)}, Revision: 2}, []string{"a.test@1", "b.test@1"}},
		{"a bundle change keeps it", Change{Bundle: fedBundle("example.org", 9)}, []string{"a.test@1", "b.test@1"}},
		{"a set replaces it whole", Change{FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{fedBundle("b.test", 2), fedBundle("c.test", 1)}},
			[]string{"b.test@2", "c.test@1"}},
		{"an empty set clears it", Change{FederatedBundlesSet: true}, nil},
		{"a reset of entries keeps it", Change{Reset: true, Upserts: []*typesv1.Entry{entry("a", 3)}, Revision: 3}, []string{"a.test@1", "b.test@1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, filepath.Join(t.TempDir(), FileName))
			seed := Change{Upserts: []*typesv1.Entry{entry("a", 1)}, Revision: 1,
				FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{fedBundle("a.test", 1), fedBundle("b.test", 1)}}
			if err := c.Apply(seed); err != nil {
				t.Fatal(err)
			}
			if err := c.Apply(tt.change); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			var got []string
			for _, b := range load(t, c).FederatedBundles {
				got = append(got, b.GetTrustDomain()+"@"+strconv.FormatUint(b.GetSequenceNumber(), 10))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("federated bundles (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFederatedBundles_BadSetNamesTheFieldAndChangesNothing(t *testing.T) {
	tests := []struct {
		name    string
		bundles []*typesv1.Bundle
		wantErr string
	}{
		{"bundle without trust domain", []*typesv1.Bundle{fedBundle("a.test", 1), {}}, "federated_bundles[1].trust_domain: must not be empty"},
		{"nil bundle", []*typesv1.Bundle{nil}, "federated_bundles[0]: must not be nil"},
		{"trust domain twice", []*typesv1.Bundle{fedBundle("a.test", 1), fedBundle("b.test", 1), fedBundle("a.test", 2)},
			`federated_bundles[2].trust_domain: "a.test" repeats federated_bundles[0]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, filepath.Join(t.TempDir(), FileName))
			if err := c.Apply(Change{FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{fedBundle("x.test", 1)}}); err != nil {
				t.Fatal(err)
			}
			before := load(t, c)
			err := c.Apply(Change{Revision: 5, FederatedBundlesSet: true, FederatedBundles: tt.bundles})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Apply error = %v, want one containing %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(before, load(t, c), protocmp.Transform()); diff != "" {
				t.Errorf("state changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestFederatedBundles_ResetClearsThem(t *testing.T) {
	c := openCache(t, filepath.Join(t.TempDir(), FileName))
	if err := c.Apply(Change{FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{fedBundle("a.test", 1)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if got := load(t, c).FederatedBundles; len(got) != 0 {
		t.Errorf("federated bundles after Reset = %v, want none", got)
	}
}
