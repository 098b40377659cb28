package unix

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const statusTemplate = "Name:\tworker\nUmask:\t0022\nState:\tS (sleeping)\n" +
	"Uid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\nFDSize:\t64\n" +
	"Groups:\t10 20 30 \nNStgid:\t42\n"

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procStatus
		wantErr string
	}{
		{
			name: "effective ids and groups",
			in:   statusTemplate,
			want: procStatus{uid: 1001, gid: 2001, groups: []uint32{10, 20, 30}},
		},
		{
			name: "no supplementary groups",
			in:   "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t \n",
			want: procStatus{groups: []uint32{}},
		},
		{name: "missing Uid", in: "Gid:\t0\t0\t0\t0\nGroups:\n", wantErr: "no Uid line"},
		{name: "missing Gid", in: "Uid:\t0\t0\t0\t0\nGroups:\n", wantErr: "no Gid line"},
		{name: "missing Groups", in: "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", wantErr: "no Groups line"},
		{name: "short Uid", in: "Uid:\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n", wantErr: "status Uid: want 4 ids"},
		{name: "non-numeric Gid", in: "Uid:\t0\t0\t0\t0\nGid:\t0\tx\t0\t0\nGroups:\n", wantErr: "status Gid: effective id"},
		{name: "negative group", in: "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t1 -2\n", wantErr: "status Groups[1]"},
		{name: "id over 32 bits", in: "Uid:\t0\t4294967296\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n", wantErr: "status Uid"},
		{name: "empty file", in: "", wantErr: "no Uid line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseStatus: %v", err)
			}
			if diff := cmp.Diff(want(tt.want), want(got)); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
		})
	}
}

// want exposes procStatus's fields to cmp.
func want(s procStatus) []any { return []any{s.uid, s.gid, s.groups} }

// fakeProc lays out <root>/<pid>/status and <root>/<pid>/exe as procfs
// would, with exe a symlink to target.
func fakeProc(t *testing.T, pid, status, target string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, pid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	if target != "" {
		if err := os.Symlink(target, filepath.Join(dir, "exe")); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestAttest_ReadsTheConfiguredProcRoot(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(bin, []byte("not really an ELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		status  string
		target  string
		want    []string
		wantErr string
	}{
		{
			name:   "every selector",
			status: statusTemplate,
			target: bin,
			want: []string{
				"unix:uid:1001", "unix:gid:2001", "unix:user:alice",
				"unix:supplementary_gid:10", "unix:supplementary_gid:20", "unix:supplementary_gid:30",
				"unix:path:" + bin, "unix:sha256:" + sha256File(t, bin),
			},
		},
		{
			name:   "no executable (kernel thread)",
			status: "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n",
			want:   []string{"unix:uid:0", "unix:gid:0"},
		},
		{
			name:   "executable gone and marked deleted",
			status: "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n",
			target: "/nonexistent/tool (deleted)",
			want:   []string{"unix:uid:0", "unix:gid:0", "unix:path:/nonexistent/tool"},
		},
		{name: "malformed status", status: "Uid:\tx\n", wantErr: "status Uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAttestor(t, Config{ProcRoot: fakeProc(t, "42", tt.status, tt.target)})
			a.lookupUser = fakeNames(map[string]string{"1001": "alice"})
			a.lookupGroup = fakeNames(nil)
			sels, err := a.Attest(context.Background(), 42)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if diff := cmp.Diff(tt.want, strs(sels)); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNew_RejectsInvalidConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"negative MaxHashSize", Config{MaxHashSize: -1}, "MaxHashSize"},
		{"relative ProcRoot", Config{ProcRoot: "proc"}, "ProcRoot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New err = %v, want one naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestAttest_NonPositivePIDIsAnError(t *testing.T) {
	a := newAttestor(t, Config{})
	for _, pid := range []int32{0, -1} {
		if sels, err := a.Attest(context.Background(), pid); err == nil {
			t.Errorf("Attest(%d) = %v, nil; want an error", pid, strs(sels))
		}
	}
}

func TestReadStatus_SizeLimits(t *testing.T) {
	groups := make([]byte, 0, 40000)
	for i := range 4000 {
		groups = append(groups, []byte(formatID(uint32(100000+i))+" ")...)
	}
	tests := []struct {
		name       string
		status     string
		wantGroups int
		wantErr    string
	}{
		{name: "fits the pooled buffer", status: statusTemplate, wantGroups: 3},
		{
			name:       "a Groups line longer than the pooled buffer",
			status:     "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t" + string(groups) + "\n",
			wantGroups: 4000,
		},
		{
			name:    "a file over the limit",
			status:  "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n" + strings.Repeat("x", maxStatusSize),
			wantErr: "longer than",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAttestor(t, Config{ProcRoot: fakeProc(t, "42", tt.status, "")})
			st, err := a.readStatus(42)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readStatus: %v", err)
			}
			if len(st.groups) != tt.wantGroups {
				t.Errorf("groups = %d, want %d", len(st.groups), tt.wantGroups)
			}
		})
	}
}
