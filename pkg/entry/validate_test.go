package entry

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func validEntry() *typesv1.Entry {
	return &typesv1.Entry{
		SpiffeId:     "spiffe://example.org/billing/worker",
		ParentId:     "spiffe://example.org/nhid/agent/join_token/abc",
		Selectors:    []string{"unix:uid:1000", "unix:sha256:deadbeef"},
		Purpose:      "Reconciles invoices nightly",
		Owner:        "alice@example.org",
		ScopeCeiling: []string{"invoices:read", "invoices:write"},
		X509Ttl:      3600,
		JwtTtl:       300,
		DnsNames:     []string{"billing.example.org", "*.billing.example.org"},
		Hint:         "billing",
		ExpiresAt:    1900000000,
	}
}

// fieldsOf returns the field prefix of every problem in a joined error.
func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var fields []string
	for _, line := range strings.Split(err.Error(), "\n") {
		field, _, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("problem %q does not name a field", line)
		}
		fields = append(fields, field)
	}
	return fields
}

func repeat(n int, f func(i int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func TestValidate_ReportsEachRuleWithItsField(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(e *typesv1.Entry)
		want   []string // fields named, in order
	}{
		{"valid entry passes", func(*typesv1.Entry) {}, nil},
		{"minimal entry passes", func(e *typesv1.Entry) {
			*e = typesv1.Entry{SpiffeId: e.SpiffeId, ParentId: e.ParentId, Selectors: []string{"k8s:ns:default"}}
		}, nil},
		{"node alias under the server ID passes", func(e *typesv1.Entry) {
			e.ParentId = "spiffe://example.org/nhid/server"
		}, nil},
		{"workload parent passes", func(e *typesv1.Entry) { e.ParentId = "spiffe://example.org/cluster/east" }, nil},
		{"id with allowed characters passes", func(e *typesv1.Entry) { e.Id = "Entry_1.a-b" }, nil},
		{"id of 64 bytes passes", func(e *typesv1.Entry) { e.Id = strings.Repeat("a", 64) }, nil},
		{"id of 65 bytes", func(e *typesv1.Entry) { e.Id = strings.Repeat("a", 65) }, []string{"entry.id"}},
		{"id with a slash", func(e *typesv1.Entry) { e.Id = "a/b" }, []string{"entry.id"}},
		{"id with a space", func(e *typesv1.Entry) { e.Id = "a b" }, []string{"entry.id"}},
		{"missing spiffe_id", func(e *typesv1.Entry) { e.SpiffeId = "" }, []string{"entry.spiffe_id"}},
		{"spiffe_id without scheme", func(e *typesv1.Entry) { e.SpiffeId = "example.org/x" }, []string{"entry.spiffe_id"}},
		{"spiffe_id with upper-case trust domain", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://Example.org/x" }, []string{"entry.spiffe_id"}},
		{"spiffe_id with a dot segment", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org/a/../b" }, []string{"entry.spiffe_id"}},
		{"spiffe_id with a query", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org/a?b=c" }, []string{"entry.spiffe_id"}},
		{"spiffe_id with a trailing slash", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org/a/" }, []string{"entry.spiffe_id"}},
		{"spiffe_id in another trust domain", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://other.org/x" }, []string{"entry.spiffe_id"}},
		{"spiffe_id without a path", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org" }, []string{"entry.spiffe_id"}},
		{"spiffe_id too long", func(e *typesv1.Entry) {
			e.SpiffeId = "spiffe://example.org/" + strings.Repeat("a", MaxSPIFFEIDLen)
		}, []string{"entry.spiffe_id"}},
		{"spiffe_id in the reserved /nhid namespace", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org/nhid/x" }, []string{"entry.spiffe_id"}},
		{"spiffe_id equal to /nhid", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org/nhid" }, []string{"entry.spiffe_id"}},
		{"spiffe_id that merely starts with nhid passes", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org/nhidx" }, nil},
		{"spiffe_id that is the server's", func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org/nhid/server" }, []string{"entry.spiffe_id"}},
		{"missing parent_id", func(e *typesv1.Entry) { e.ParentId = "" }, []string{"entry.parent_id"}},
		{"malformed parent_id", func(e *typesv1.Entry) { e.ParentId = "spiffe:///x" }, []string{"entry.parent_id"}},
		{"parent_id in another trust domain", func(e *typesv1.Entry) { e.ParentId = "spiffe://other.org/nhid/server" }, []string{"entry.parent_id"}},
		{"parent_id without a path", func(e *typesv1.Entry) { e.ParentId = "spiffe://example.org" }, []string{"entry.parent_id"}},
		{"parent_id equal to spiffe_id", func(e *typesv1.Entry) { e.ParentId = e.SpiffeId }, []string{"entry.parent_id"}},
		{"no selectors", func(e *typesv1.Entry) { e.Selectors = nil }, []string{"entry.selectors"}},
		{"64 selectors pass", func(e *typesv1.Entry) {
			e.Selectors = repeat(64, func(i int) string { return fmt.Sprintf("unix:gid:%d", i) })
		}, nil},
		{"65 selectors", func(e *typesv1.Entry) {
			e.Selectors = repeat(65, func(i int) string { return fmt.Sprintf("unix:gid:%d", i) })
		}, []string{"entry.selectors"}},
		{"selector without a colon", func(e *typesv1.Entry) { e.Selectors = []string{"unix:uid:1", "x", "unix"} }, []string{"entry.selectors[1]", "entry.selectors[2]"}},
		{"selector with an empty value", func(e *typesv1.Entry) { e.Selectors = []string{"unix:"} }, []string{"entry.selectors[0]"}},
		{"selector with an empty type", func(e *typesv1.Entry) { e.Selectors = []string{":x"} }, []string{"entry.selectors[0]"}},
		{"selector with a newline", func(e *typesv1.Entry) { e.Selectors = []string{"unix:a\nb"} }, []string{"entry.selectors[0]"}},
		{"x509_ttl at the bounds passes", func(e *typesv1.Entry) { e.X509Ttl = 60 }, nil},
		{"x509_ttl at the maximum passes", func(e *typesv1.Entry) { e.X509Ttl = 30 * 24 * 3600 }, nil},
		{"x509_ttl zero passes", func(e *typesv1.Entry) { e.X509Ttl = 0 }, nil},
		{"x509_ttl negative", func(e *typesv1.Entry) { e.X509Ttl = -1 }, []string{"entry.x509_ttl"}},
		{"x509_ttl below the minimum", func(e *typesv1.Entry) { e.X509Ttl = 59 }, []string{"entry.x509_ttl"}},
		{"x509_ttl above the maximum", func(e *typesv1.Entry) { e.X509Ttl = 30*24*3600 + 1 }, []string{"entry.x509_ttl"}},
		{"jwt_ttl at the minimum passes", func(e *typesv1.Entry) { e.JwtTtl = 30 }, nil},
		{"jwt_ttl negative", func(e *typesv1.Entry) { e.JwtTtl = -30 }, []string{"entry.jwt_ttl"}},
		{"jwt_ttl below the minimum", func(e *typesv1.Entry) { e.JwtTtl = 29 }, []string{"entry.jwt_ttl"}},
		{"jwt_ttl above the maximum", func(e *typesv1.Entry) { e.JwtTtl = 24*3600 + 1 }, []string{"entry.jwt_ttl"}},
		{"32 dns names pass", func(e *typesv1.Entry) {
			e.DnsNames = repeat(32, func(i int) string { return fmt.Sprintf("h%d.example.org", i) })
		}, nil},
		{"33 dns names", func(e *typesv1.Entry) {
			e.DnsNames = repeat(33, func(i int) string { return fmt.Sprintf("h%d.example.org", i) })
		}, []string{"entry.dns_names"}},
		{"bad dns names", func(e *typesv1.Entry) {
			e.DnsNames = []string{"ok.example.org", "", "a..b", "-a.b", "a_b.c", "*", "a.*.b", strings.Repeat("a", 64) + ".b", strings.Repeat("a.", 127) + "aa", "a.b."}
		}, []string{
			"entry.dns_names[1]", "entry.dns_names[2]", "entry.dns_names[3]", "entry.dns_names[4]", "entry.dns_names[5]",
			"entry.dns_names[6]", "entry.dns_names[7]", "entry.dns_names[8]", "entry.dns_names[9]",
		}},
		{"purpose of 256 bytes passes", func(e *typesv1.Entry) { e.Purpose = strings.Repeat("p", 256) }, nil},
		{"purpose of 257 bytes", func(e *typesv1.Entry) { e.Purpose = strings.Repeat("p", 257) }, []string{"entry.purpose"}},
		{"purpose on two lines", func(e *typesv1.Entry) { e.Purpose = "a\nb" }, []string{"entry.purpose"}},
		{"purpose with a tab", func(e *typesv1.Entry) { e.Purpose = "a\tb" }, []string{"entry.purpose"}},
		{"purpose in invalid UTF-8", func(e *typesv1.Entry) { e.Purpose = "a\xffb" }, []string{"entry.purpose"}},
		{"purpose in non-ASCII UTF-8 passes", func(e *typesv1.Entry) { e.Purpose = "Rechnungsprüfung für Kunden" }, nil},
		{"owner of 257 bytes", func(e *typesv1.Entry) { e.Owner = strings.Repeat("o", 257) }, []string{"entry.owner"}},
		{"owner with a carriage return", func(e *typesv1.Entry) { e.Owner = "alice\r" }, []string{"entry.owner"}},
		{"hint of 128 bytes passes", func(e *typesv1.Entry) { e.Hint = strings.Repeat("h", 128) }, nil},
		{"hint of 129 bytes", func(e *typesv1.Entry) { e.Hint = strings.Repeat("h", 129) }, []string{"entry.hint"}},
		{"64 scopes pass", func(e *typesv1.Entry) {
			e.ScopeCeiling = repeat(64, func(i int) string { return fmt.Sprintf("s%d", i) })
		}, nil},
		{"65 scopes", func(e *typesv1.Entry) {
			e.ScopeCeiling = repeat(65, func(i int) string { return fmt.Sprintf("s%d", i) })
		}, []string{"entry.scope_ceiling"}},
		{"scope with every allowed character passes", func(e *typesv1.Entry) {
			e.ScopeCeiling = []string{"!#$%&'()*+,-./0123456789:;<=>?@AZ[]^_`az{|}~"}
		}, nil},
		{"bad scopes", func(e *typesv1.Entry) {
			e.ScopeCeiling = []string{"ok", "", "a b", `a"b`, `a\b`, "é", "a\x7f", strings.Repeat("s", 129)}
		}, []string{
			"entry.scope_ceiling[1]", "entry.scope_ceiling[2]", "entry.scope_ceiling[3]", "entry.scope_ceiling[4]",
			"entry.scope_ceiling[5]", "entry.scope_ceiling[6]", "entry.scope_ceiling[7]",
		}},
		{"scope of 128 bytes passes", func(e *typesv1.Entry) { e.ScopeCeiling = []string{strings.Repeat("s", 128)} }, nil},
		{"duplicate scope", func(e *typesv1.Entry) { e.ScopeCeiling = []string{"a", "b", "a"} }, []string{"entry.scope_ceiling[2]"}},
		{"federated trust domains pass", func(e *typesv1.Entry) { e.FederatesWith = []string{"partner.test", "other_td.example-1"} }, nil},
		{"32 federated trust domains pass", func(e *typesv1.Entry) {
			e.FederatesWith = repeat(32, func(i int) string { return fmt.Sprintf("td%d.test", i) })
		}, nil},
		{"33 federated trust domains", func(e *typesv1.Entry) {
			e.FederatesWith = repeat(33, func(i int) string { return fmt.Sprintf("td%d.test", i) })
		}, []string{"entry.federates_with"}},
		{"bad federated trust domains", func(e *typesv1.Entry) {
			e.FederatesWith = []string{"partner.test", "", "Partner.test", "spiffe://partner.test", "spiffe://a.test/x", "a b", "a:1", strings.Repeat("a", 256)}
		}, []string{
			"entry.federates_with[1]", "entry.federates_with[2]", "entry.federates_with[3]", "entry.federates_with[4]",
			"entry.federates_with[5]", "entry.federates_with[6]", "entry.federates_with[7]",
		}},
		{"federating with the own trust domain", func(e *typesv1.Entry) { e.FederatesWith = []string{"partner.test", "example.org"} }, []string{"entry.federates_with[1]"}},
		{"duplicate federated trust domain", func(e *typesv1.Entry) { e.FederatesWith = []string{"a.test", "b.test", "a.test"} }, []string{"entry.federates_with[2]"}},
		{"negative expires_at", func(e *typesv1.Entry) { e.ExpiresAt = -1 }, []string{"entry.expires_at"}},
		{"negative revision", func(e *typesv1.Entry) { e.Revision = -1 }, []string{"entry.revision"}},
		{"negative created_at", func(e *typesv1.Entry) { e.CreatedAt = -1 }, []string{"entry.created_at"}},
		{"every problem at once", func(e *typesv1.Entry) {
			e.Id = "bad id"
			e.SpiffeId = "spiffe://other.org/x"
			e.ParentId = "not an id"
			e.Selectors = []string{"nocolon"}
			e.X509Ttl = -5
			e.JwtTtl = 1
			e.DnsNames = []string{"bad_name"}
			e.Purpose = "two\nlines"
			e.Owner = strings.Repeat("o", 300)
			e.Hint = strings.Repeat("h", 200)
			e.ScopeCeiling = []string{"a b"}
			e.FederatesWith = []string{"example.org"}
			e.ExpiresAt = -1
		}, []string{
			"entry.id", "entry.spiffe_id", "entry.parent_id", "entry.selectors[0]", "entry.x509_ttl", "entry.jwt_ttl",
			"entry.dns_names[0]", "entry.purpose", "entry.owner", "entry.hint", "entry.scope_ceiling[0]",
			"entry.federates_with[0]", "entry.expires_at",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEntry()
			tt.mutate(e)
			err := Validate(td, e, DefaultLimits())
			if diff := cmp.Diff(tt.want, fieldsOf(t, err)); diff != "" {
				t.Errorf("fields named (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}

func TestValidate_RejectsNilEntryAndZeroTrustDomain(t *testing.T) {
	if err := Validate(td, nil, DefaultLimits()); err == nil || !strings.HasPrefix(err.Error(), "entry:") {
		t.Errorf("Validate(nil) = %v, want an error about the entry", err)
	}
	if err := Validate(spiffeid.TrustDomain{}, validEntry(), DefaultLimits()); err == nil {
		t.Error("Validate with a zero trust domain succeeded, want an error")
	}
}

func TestValidate_MessagesExplainTheProblem(t *testing.T) {
	e := validEntry()
	e.SpiffeId = "spiffe://other.org/x"
	e.Selectors = []string{"unix:uid:1", "nocolon"}
	e.X509Ttl = 10
	err := Validate(td, e, DefaultLimits())
	want := strings.Join([]string{
		`entry.spiffe_id: "spiffe://other.org/x" is not in trust domain "example.org"`,
		`entry.selectors[1]: selector "nocolon" is not of the form type:value`,
		`entry.x509_ttl: 10s is below the minimum of 1m0s`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("Validate() error =\n%v\nwant\n%s", err, want)
	}
}

func TestValidate_FederatesWithMessagesSayWhatToDo(t *testing.T) {
	e := validEntry()
	e.FederatesWith = []string{"spiffe://partner.test", "example.org", "x.test", "x.test"}
	err := Validate(td, e, DefaultLimits())
	want := strings.Join([]string{
		`entry.federates_with[0]: "spiffe://partner.test" is a SPIFFE ID: give the trust domain name alone, e.g. "partner.test"`,
		`entry.federates_with[1]: "example.org" is the server's own trust domain, whose bundle every workload already receives`,
		`entry.federates_with[3]: "x.test" repeats federates_with[2]`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("Validate() error =\n%v\nwant\n%s", err, want)
	}
}

func TestValidate_LongInputIsShortenedInMessages(t *testing.T) {
	e := validEntry()
	e.SpiffeId = "spiffe://other.org/" + strings.Repeat("x", 1000)
	err := Validate(td, e, DefaultLimits())
	if err == nil || len(err.Error()) > 300 {
		t.Errorf("Validate() error = %q (%d bytes), want a short message", err, len(fmt.Sprint(err)))
	}
}

func TestValidate_UsesTheGivenLimits(t *testing.T) {
	lim := Limits{MinX509TTL: time.Hour, MaxX509TTL: 2 * time.Hour, MinJWTTTL: time.Minute, MaxJWTTTL: 2 * time.Minute}
	tests := []struct {
		x509, jwt int32
		want      []string
	}{
		{3600, 60, nil},
		{7200, 120, nil},
		{3599, 60, []string{"entry.x509_ttl"}},
		{7201, 121, []string{"entry.x509_ttl", "entry.jwt_ttl"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("x509=%d,jwt=%d", tt.x509, tt.jwt), func(t *testing.T) {
			e := validEntry()
			e.X509Ttl, e.JwtTtl = tt.x509, tt.jwt
			if diff := cmp.Diff(tt.want, fieldsOf(t, Validate(td, e, lim))); diff != "" {
				t.Errorf("fields named (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLimitsCheck(t *testing.T) {
	tests := []struct {
		name    string
		lim     Limits
		wantErr bool
	}{
		{"defaults are consistent", DefaultLimits(), false},
		{"zero limits are refused", Limits{}, true},
		{"maximum below minimum", Limits{MinX509TTL: time.Hour, MaxX509TTL: time.Minute, MinJWTTTL: time.Minute, MaxJWTTTL: time.Hour}, true},
		{"maximum beyond int32 seconds", Limits{MinX509TTL: time.Minute, MaxX509TTL: 100 * 365 * 24 * time.Hour, MinJWTTTL: time.Minute, MaxJWTTTL: time.Hour}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.lim.Check(); (err != nil) != tt.wantErr {
				t.Errorf("Check() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestCheckID(t *testing.T) {
	tests := []struct {
		id      string
		wantErr bool
	}{
		{"", true},
		{"0b6c2c7e-9c53-4d0e-9a8e-3f1f3b8f2a11", false},
		{"a.b_c-D", false},
		{strings.Repeat("x", 64), false},
		{strings.Repeat("x", 65), true},
		{"a/b", true},
		{"ü", true},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if err := CheckID(tt.id); (err != nil) != tt.wantErr {
				t.Errorf("CheckID(%q) = %v, want error %v", tt.id, err, tt.wantErr)
			}
		})
	}
}

func BenchmarkValidate(b *testing.B) {
	e := validEntry()
	lim := DefaultLimits()
	b.ReportAllocs()
	for b.Loop() {
		if err := Validate(td, e, lim); err != nil {
			b.Fatal(err)
		}
	}
}
