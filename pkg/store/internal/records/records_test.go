package records

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestPageToken_RoundTripsAndRejectsGarbage(t *testing.T) {
	for _, key := range []string{"a", "01a242c3-f679-7651", "\x00\xffbinary"} {
		got, err := DecodePageToken(EncodePageToken(key))
		if err != nil || got != key {
			t.Errorf("round trip of %q = %q, %v", key, got, err)
		}
	}
	if got, err := DecodePageToken(""); err != nil || got != "" {
		t.Errorf(`DecodePageToken("") = %q, %v; want the first page`, got, err)
	}
	for _, bad := range []string{"!!!", "a=b", EncodePageToken("")[0:0] + "="} {
		if _, err := DecodePageToken(bad); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("DecodePageToken(%q) error = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestCheckGrant(t *testing.T) {
	long := make([]byte, MaxGrantIDLen+1)
	for i := range long {
		long[i] = 'x'
	}
	tests := []struct {
		name string
		g    *typesv1.Grant
		ok   bool
	}{
		{"valid", &typesv1.Grant{Id: "g1", SpiffeId: "spiffe://example.org/a", ExpiresAt: 10}, true},
		{"no id", &typesv1.Grant{SpiffeId: "spiffe://example.org/a"}, false},
		{"id too long", &typesv1.Grant{Id: string(long), SpiffeId: "spiffe://example.org/a"}, false},
		{"no subject", &typesv1.Grant{Id: "g1"}, false},
		{"negative time", &typesv1.Grant{Id: "g1", SpiffeId: "spiffe://example.org/a", EndedAt: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckGrant(tt.g)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, store.ErrInvalidArgument)) {
				t.Fatalf("CheckGrant = %v, want ok=%v (else ErrInvalidArgument)", err, tt.ok)
			}
		})
	}
}

func TestUniqueStrings_LeavesInputAlone(t *testing.T) {
	in := []string{"b", "a", "b"}
	if diff := cmp.Diff([]string{"a", "b"}, UniqueStrings(in)); diff != "" {
		t.Fatalf("UniqueStrings (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b", "a", "b"}, in); diff != "" {
		t.Fatalf("input changed (-want +got):\n%s", diff)
	}
}
