package adminapi

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestCreateEntry_StoresTheNormalisedEntryAndAuditsIt(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	in := workloadEntry("billing")
	in.Selectors = []string{"unix:uid:1000", "k8s:ns:billing", "unix:uid:1000"}
	in.ScopeCeiling = []string{"write", "read"}
	in.Revision = 77    // server-set: ignored
	in.CreatedAt = 1234 // server-set: replaced
	got := h.create(t, in)

	want := proto.Clone(in).(*typesv1.Entry)
	want.Selectors = []string{"k8s:ns:billing", "unix:uid:1000"}
	want.ScopeCeiling = []string{"read", "write"}
	want.CreatedAt = testNow.Unix()
	if diff := cmp.Diff(want, got, protocmp.Transform(),
		protocmp.IgnoreFields(&typesv1.Entry{}, "id", "revision")); diff != "" {
		t.Errorf("created entry (-want +got):\n%s", diff)
	}
	if got.GetId() == "" || got.GetRevision() == 0 || got.GetRevision() == 77 {
		t.Errorf("created entry has id %q revision %d, want a server-assigned id and revision", got.GetId(), got.GetRevision())
	}
	stored, err := h.entries.GetEntry(testCtx(t), &adminv1.GetEntryRequest{Id: got.GetId()})
	if err != nil {
		t.Fatalf("GetEntry: %v", err)
	}
	if diff := cmp.Diff(got, stored.GetEntry(), protocmp.Transform()); diff != "" {
		t.Errorf("stored entry differs from the response (-response +stored):\n%s", diff)
	}
	logs := h.logs.String()
	for _, want := range []string{`"msg":"admin change"`, `"method":"/nhid.admin.v1.EntryService/CreateEntry"`,
		fmt.Sprintf(`"uid":%d`, uidOfTest()), `"entry_id":"` + got.GetId() + `"`, `"spiffe_id":"spiffe://example.org/billing"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("audit log lacks %s:\n%s", want, logs)
		}
	}
}

func TestCreateEntry_KeepsACallerChosenID(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	in := workloadEntry("billing")
	in.Id = "billing-1"
	if got := h.create(t, in); got.GetId() != "billing-1" {
		t.Errorf("id = %q, want billing-1", got.GetId())
	}
}

func TestCreateEntry_BadInputIsInvalidArgumentNamingTheFieldAndStoresNothing(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(e *typesv1.Entry) *typesv1.Entry
		field  string
	}{
		{"missing entry", func(*typesv1.Entry) *typesv1.Entry { return nil }, "entry: is required"},
		{"malformed spiffe_id", func(e *typesv1.Entry) *typesv1.Entry { e.SpiffeId = "spiffe:/x"; return e }, "entry.spiffe_id"},
		{"spiffe_id in another trust domain", func(e *typesv1.Entry) *typesv1.Entry { e.SpiffeId = "spiffe://other.org/x"; return e }, "entry.spiffe_id"},
		{"reserved spiffe_id", func(e *typesv1.Entry) *typesv1.Entry { e.SpiffeId = "spiffe://example.org/nhid/agent/x/y"; return e }, "entry.spiffe_id"},
		{"malformed parent_id", func(e *typesv1.Entry) *typesv1.Entry { e.ParentId = "node-1"; return e }, "entry.parent_id"},
		{"no selectors", func(e *typesv1.Entry) *typesv1.Entry { e.Selectors = nil; return e }, "entry.selectors"},
		{"selector without a colon", func(e *typesv1.Entry) *typesv1.Entry { e.Selectors = []string{"unix:uid:1", "uid1000"}; return e }, "entry.selectors[1]"},
		{"x509_ttl below the minimum", func(e *typesv1.Entry) *typesv1.Entry { e.X509Ttl = 10; return e }, "entry.x509_ttl"},
		{"x509_ttl above the maximum", func(e *typesv1.Entry) *typesv1.Entry { e.X509Ttl = 31 * 86400; return e }, "entry.x509_ttl"},
		{"negative jwt_ttl", func(e *typesv1.Entry) *typesv1.Entry { e.JwtTtl = -1; return e }, "entry.jwt_ttl"},
		{"jwt_ttl above the maximum", func(e *typesv1.Entry) *typesv1.Entry { e.JwtTtl = 86401; return e }, "entry.jwt_ttl"},
		{"bad dns name", func(e *typesv1.Entry) *typesv1.Entry { e.DnsNames = []string{"a_b.example.org"}; return e }, "entry.dns_names[0]"},
		{"multi-line purpose", func(e *typesv1.Entry) *typesv1.Entry { e.Purpose = "a\nb"; return e }, "entry.purpose"},
		{"overlong owner", func(e *typesv1.Entry) *typesv1.Entry { e.Owner = strings.Repeat("o", 257); return e }, "entry.owner"},
		{"scope with a space", func(e *typesv1.Entry) *typesv1.Entry { e.ScopeCeiling = []string{"a b"}; return e }, "entry.scope_ceiling[0]"},
		{"bad id", func(e *typesv1.Entry) *typesv1.Entry { e.Id = "a/b"; return e }, "entry.id"},
		{"negative expires_at", func(e *typesv1.Entry) *typesv1.Entry { e.ExpiresAt = -5; return e }, "entry.expires_at"},
		{"federating with the own trust domain", func(e *typesv1.Entry) *typesv1.Entry {
			e.FederatesWith = []string{"example.org"}
			return e
		}, "entry.federates_with[0]"},
		{"federating with a bad trust domain", func(e *typesv1.Entry) *typesv1.Entry {
			e.FederatesWith = []string{"partner.test", "Partner.Test"}
			return e
		}, "entry.federates_with[1]"},
	}
	h := newHarness(t, harnessOptions{})
	h.create(t, workloadEntry("existing"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.snapshot(t)
			_, err := h.entries.CreateEntry(testCtx(t), &adminv1.CreateEntryRequest{Entry: tt.mutate(workloadEntry("new"))})
			requireCode(t, err, codes.InvalidArgument, tt.field)
			h.requireUnchanged(t, before)
		})
	}
}

func TestCreateEntry_DuplicatesAreAlreadyExists(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	first := workloadEntry("billing")
	first.Id = "billing-1"
	h.create(t, first)
	tests := []struct {
		name  string
		entry *typesv1.Entry
	}{
		{"same id", func() *typesv1.Entry { e := workloadEntry("other"); e.Id = "billing-1"; return e }()},
		{"same spiffe_id, parent and selectors in another order", func() *typesv1.Entry {
			e := workloadEntry("billing")
			e.Selectors = []string{e.Selectors[1], e.Selectors[0], e.Selectors[1]}
			return e
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.snapshot(t)
			_, err := h.entries.CreateEntry(testCtx(t), &adminv1.CreateEntryRequest{Entry: tt.entry})
			requireCode(t, err, codes.AlreadyExists, "already exists")
			h.requireUnchanged(t, before)
		})
	}
}

func TestUpdateEntry(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	orig := h.create(t, workloadEntry("billing"))

	t.Run("with the read revision replaces the entry and keeps created_at", func(t *testing.T) {
		next := proto.Clone(orig).(*typesv1.Entry)
		next.Purpose = "reconciles invoices"
		next.Selectors = []string{"unix:uid:2000", "unix:uid:2000"}
		next.CreatedAt = 1
		resp, err := h.entries.UpdateEntry(testCtx(t), &adminv1.UpdateEntryRequest{Entry: next})
		if err != nil {
			t.Fatalf("UpdateEntry: %v", err)
		}
		got := resp.GetEntry()
		if got.GetPurpose() != "reconciles invoices" || !cmp.Equal(got.GetSelectors(), []string{"unix:uid:2000"}) {
			t.Errorf("updated entry = %v, want the new purpose and normalised selectors", got)
		}
		if got.GetCreatedAt() != orig.GetCreatedAt() || got.GetRevision() <= orig.GetRevision() {
			t.Errorf("created_at %d revision %d; want created_at %d kept and revision above %d",
				got.GetCreatedAt(), got.GetRevision(), orig.GetCreatedAt(), orig.GetRevision())
		}
		if !strings.Contains(h.logs.String(), `"method":"/nhid.admin.v1.EntryService/UpdateEntry"`) {
			t.Error("update was not audited")
		}
	})
	t.Run("with a stale revision is Aborted and changes nothing", func(t *testing.T) {
		before := h.snapshot(t)
		stale := proto.Clone(orig).(*typesv1.Entry)
		stale.Purpose = "lost update"
		_, err := h.entries.UpdateEntry(testCtx(t), &adminv1.UpdateEntryRequest{Entry: stale})
		requireCode(t, err, codes.Aborted, msgConflict)
		h.requireUnchanged(t, before)
	})
	t.Run("with revision 0 replaces whatever is stored", func(t *testing.T) {
		blind := proto.Clone(orig).(*typesv1.Entry)
		blind.Revision = 0
		blind.Owner = "bob@example.org"
		resp, err := h.entries.UpdateEntry(testCtx(t), &adminv1.UpdateEntryRequest{Entry: blind})
		if err != nil {
			t.Fatalf("UpdateEntry: %v", err)
		}
		if resp.GetEntry().GetOwner() != "bob@example.org" {
			t.Errorf("owner = %q, want bob@example.org", resp.GetEntry().GetOwner())
		}
	})
	t.Run("of an unknown id is NotFound", func(t *testing.T) {
		e := workloadEntry("ghost")
		e.Id = "no-such-entry"
		_, err := h.entries.UpdateEntry(testCtx(t), &adminv1.UpdateEntryRequest{Entry: e})
		requireCode(t, err, codes.NotFound, "no-such-entry")
	})
	badUpdates := []struct {
		name   string
		mutate func(e *typesv1.Entry) *typesv1.Entry
		field  string
	}{
		{"missing entry", func(*typesv1.Entry) *typesv1.Entry { return nil }, "entry: is required"},
		{"missing id", func(e *typesv1.Entry) *typesv1.Entry { e.Id = ""; return e }, "entry.id"},
		{"invalid SPIFFE ID", func(e *typesv1.Entry) *typesv1.Entry { e.SpiffeId = "spiffe://example.org//x"; return e }, "entry.spiffe_id"},
		{"selector without a colon", func(e *typesv1.Entry) *typesv1.Entry { e.Selectors = []string{"nocolon"}; return e }, "entry.selectors[0]"},
		{"ttl out of range", func(e *typesv1.Entry) *typesv1.Entry { e.X509Ttl = 1; return e }, "entry.x509_ttl"},
		{"duplicate federated trust domain", func(e *typesv1.Entry) *typesv1.Entry {
			e.FederatesWith = []string{"partner.test", "partner.test"}
			return e
		}, "entry.federates_with[1]"},
	}
	for _, tt := range badUpdates {
		t.Run("with "+tt.name+" is InvalidArgument and changes nothing", func(t *testing.T) {
			before := h.snapshot(t)
			_, err := h.entries.UpdateEntry(testCtx(t), &adminv1.UpdateEntryRequest{Entry: tt.mutate(proto.Clone(before.entries[0]).(*typesv1.Entry))})
			requireCode(t, err, codes.InvalidArgument, tt.field)
			h.requireUnchanged(t, before)
		})
	}
}

func TestDeleteEntry(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	e := h.create(t, workloadEntry("billing"))
	resp, err := h.entries.DeleteEntry(testCtx(t), &adminv1.DeleteEntryRequest{Id: e.GetId()})
	if err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	if resp.GetEntry().GetSpiffeId() != e.GetSpiffeId() {
		t.Errorf("deleted entry = %v, want %v", resp.GetEntry(), e)
	}
	if !strings.Contains(h.logs.String(), `"method":"/nhid.admin.v1.EntryService/DeleteEntry"`) {
		t.Error("delete was not audited")
	}
	_, err = h.entries.GetEntry(testCtx(t), &adminv1.GetEntryRequest{Id: e.GetId()})
	requireCode(t, err, codes.NotFound)
	_, err = h.entries.DeleteEntry(testCtx(t), &adminv1.DeleteEntryRequest{Id: e.GetId()})
	requireCode(t, err, codes.NotFound, e.GetId())
}

func TestEntryIDRequests_RejectBadIDs(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, id := range []string{"", "a b", strings.Repeat("x", 65)} {
		t.Run(fmt.Sprintf("id %q", id), func(t *testing.T) {
			_, err := h.entries.GetEntry(testCtx(t), &adminv1.GetEntryRequest{Id: id})
			requireCode(t, err, codes.InvalidArgument, "id: ")
			_, err = h.entries.DeleteEntry(testCtx(t), &adminv1.DeleteEntryRequest{Id: id})
			requireCode(t, err, codes.InvalidArgument, "id: ")
		})
	}
}
