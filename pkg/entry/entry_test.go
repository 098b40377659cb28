package entry

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestNormalize_SortsDedupesAndLowercases(t *testing.T) {
	tests := []struct {
		name string
		in   *typesv1.Entry
		want *typesv1.Entry
	}{
		{
			name: "unsorted with duplicates",
			in: &typesv1.Entry{
				Selectors:     []string{"unix:uid:1000", "k8s:ns:a", "unix:uid:1000"},
				ScopeCeiling:  []string{"write", "read", "write"},
				DnsNames:      []string{"B.example.org", "a.example.org", "b.example.org"},
				FederatesWith: []string{"z.test", "partner.test", "z.test"},
			},
			want: &typesv1.Entry{
				Selectors:     []string{"k8s:ns:a", "unix:uid:1000"},
				ScopeCeiling:  []string{"read", "write"},
				DnsNames:      []string{"a.example.org", "b.example.org"},
				FederatesWith: []string{"partner.test", "z.test"},
			},
		},
		{
			name: "absent fields stay absent",
			in:   &typesv1.Entry{Selectors: []string{"unix:uid:1"}},
			want: &typesv1.Entry{Selectors: []string{"unix:uid:1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Normalize(tt.in)
			if diff := cmp.Diff(tt.want, tt.in, protocmp.Transform()); diff != "" {
				t.Errorf("Normalize (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNormalize_NilIsANoop(t *testing.T) {
	Normalize(nil)
}

func TestNormalize_KeepsAValidEntryValid(t *testing.T) {
	e := validEntry()
	e.Selectors = append(e.Selectors, e.Selectors...)
	e.DnsNames = append(e.DnsNames, "BILLING.example.org")
	Normalize(e)
	if err := Validate(td, e, DefaultLimits()); err != nil {
		t.Fatalf("Validate after Normalize: %v", err)
	}
	again := &typesv1.Entry{}
	again.Selectors = append([]string(nil), e.Selectors...)
	again.ScopeCeiling = append([]string(nil), e.ScopeCeiling...)
	again.DnsNames = append([]string(nil), e.DnsNames...)
	Normalize(again)
	if diff := cmp.Diff(e.Selectors, again.Selectors); diff != "" {
		t.Errorf("Normalize is not idempotent (-first +second):\n%s", diff)
	}
}

func TestSelectors_BuildsTheSetAndSkipsUnparsable(t *testing.T) {
	tests := []struct {
		name string
		in   *typesv1.Entry
		want []string
	}{
		{"nil entry", nil, nil},
		{"sorted and deduplicated", &typesv1.Entry{Selectors: []string{"unix:uid:1", "k8s:ns:a", "unix:uid:1"}}, []string{"k8s:ns:a", "unix:uid:1"}},
		{"unparsable selector is dropped", &typesv1.Entry{Selectors: []string{"bogus", "unix:gid:2"}}, []string{"unix:gid:2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Selectors(tt.in).Strings()); diff != "" {
				t.Errorf("Selectors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIsAlias(t *testing.T) {
	tests := []struct {
		name   string
		parent string
		want   bool
	}{
		{"parent is the server", "spiffe://example.org/nhid/server", true},
		{"parent is an agent", "spiffe://example.org/nhid/agent/join_token/x", false},
		{"parent is another trust domain's server", "spiffe://other.org/nhid/server", false},
		{"parent is empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsAlias(td, &typesv1.Entry{ParentId: tt.parent}); got != tt.want {
				t.Errorf("IsAlias(parent %q) = %v, want %v", tt.parent, got, tt.want)
			}
		})
	}
	if IsAlias(td, nil) {
		t.Error("IsAlias(nil) = true, want false")
	}
}

func TestExpired(t *testing.T) {
	now := time.Unix(1_800_000_000, 500)
	tests := []struct {
		name      string
		expiresAt int64
		want      bool
	}{
		{"never expires", 0, false},
		{"expires in the future", now.Unix() + 1, false},
		{"expires this second", now.Unix(), true},
		{"expired in the past", now.Unix() - 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Expired(&typesv1.Entry{ExpiresAt: tt.expiresAt}, now); got != tt.want {
				t.Errorf("Expired(expires_at %d) = %v, want %v", tt.expiresAt, got, tt.want)
			}
		})
	}
}
