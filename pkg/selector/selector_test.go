package selector

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in        string
		typ, val  string
		wantError string
	}{
		{in: "unix:uid:1000", typ: "unix", val: "uid:1000"},
		{in: "k8s:ns:default", typ: "k8s", val: "ns:default"},
		{in: "a:b", typ: "a", val: "b"},
		{in: "nocolon", wantError: "not of the form type:value"},
		{in: ":value", wantError: "type is empty"},
		{in: "unix:", wantError: "empty value"},
		{in: "unix:a\nb", wantError: "control character"},
		{in: "unix:" + strings.Repeat("x", MaxLen), wantError: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("Parse(%q) error = %v, want it to contain %q", tt.in, err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got.Type() != tt.typ || got.Value() != tt.val || got.String() != tt.in {
				t.Fatalf("Parse(%q) = %q/%q", tt.in, got.Type(), got.Value())
			}
		})
	}
}

func TestSetIncludes(t *testing.T) {
	workload := NewSet(Must("unix:uid:1000"), Must("unix:gid:1000"), Must("unix:sha256:ab"))
	tests := []struct {
		name  string
		entry []string
		want  bool
	}{
		{"subset", []string{"unix:uid:1000"}, true},
		{"all", []string{"unix:uid:1000", "unix:gid:1000", "unix:sha256:ab"}, true},
		{"one missing", []string{"unix:uid:1000", "unix:sha256:cd"}, false},
		{"empty never matches", nil, false},
		{"superset", []string{"unix:uid:1000", "unix:gid:1000", "unix:sha256:ab", "k8s:ns:x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entry, err := ParseSet(tt.entry)
			if err != nil {
				t.Fatal(err)
			}
			if got := workload.Includes(entry); got != tt.want {
				t.Fatalf("Includes = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseSet_SortsAndDeduplicates(t *testing.T) {
	s, err := ParseSet([]string{"b:2", "a:1", "b:2"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a:1", "b:2"}, s.Strings()); diff != "" {
		t.Fatalf("Strings() mismatch (-want +got):\n%s", diff)
	}
	if _, err := ParseSet([]string{"a:1", "bad"}); err == nil || !strings.Contains(err.Error(), "selectors[1]") {
		t.Fatalf("ParseSet error = %v, want one naming selectors[1]", err)
	}
}

func TestSetEqualAndKey(t *testing.T) {
	a := NewSet(Must("a:1"), Must("b:2"))
	b := NewSet(Must("b:2"), Must("a:1"))
	if !a.Equal(b) || a.Key() != b.Key() {
		t.Fatal("sets with the same selectors in another order differ")
	}
	if a.Equal(NewSet(Must("a:1"))) {
		t.Fatal("different sets compare equal")
	}
	if !a.Contains(Must("b:2")) || a.Contains(Must("c:3")) {
		t.Fatal("Contains is wrong")
	}
	if got := a.Union(NewSet(Must("c:3"))).Len(); got != 3 {
		t.Fatalf("Union Len = %d, want 3", got)
	}
}
