package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies_NoServerCode keeps the operator CLI free of server and
// store code: it must work on a host that only has the admin socket.
func TestDependencies_NoServerCode(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	cmd := exec.CommandContext(t.Context(), goTool, "list", "-deps", ".")
	cmd.Env = append(cmd.Environ(), "GOTOOLCHAIN=local")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{"github.com/nhid/nhid/pkg/server", "github.com/nhid/nhid/pkg/store", "go.etcd.io/bbolt"}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("nhidctl depends on %s", dep)
			}
		}
	}
}
