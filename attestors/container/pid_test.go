package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIDFromPID(t *testing.T) {
	const id = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	procRoot := t.TempDir()
	write := func(pid, cgroup string) {
		dir := filepath.Join(procRoot, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "mountinfo"), []byte("30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10", "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-"+id+".scope\n")
	write("11", "0::/system.slice/sshd.service\n")
	tests := []struct {
		pid     int32
		want    string
		wantErr string
	}{
		{10, id, ""},
		{11, "", ""},
		{12, "", "pid 12"},
		{0, "", "must be positive"},
	}
	for _, tt := range tests {
		got, err := IDFromPID(procRoot, tt.pid)
		if got != tt.want || (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("IDFromPID(%d) = %q, %v; want %q, an error containing %q", tt.pid, got, err, tt.want, tt.wantErr)
		}
	}
}
