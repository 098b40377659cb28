// Package arch checks the import rules of docs/ARCHITECTURE.md with the go
// tool itself, so a violation fails the build instead of waiting for review.
package arch

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/nhid/nhid"

// imports maps every package of the module to its direct imports.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			m[f[0]] = f[1:]
		}
	}
	return m
}

// deps lists every package pkg depends on, directly or not.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	return strings.Fields(string(out))
}

func TestOnlyStoreImportsDatabaseDrivers(t *testing.T) {
	drivers := []string{"go.etcd.io/bbolt", "go.etcd.io/etcd/client/v3"}
	for pkg, imps := range imports(t) {
		if strings.HasPrefix(pkg, module+"/pkg/store/") {
			continue
		}
		for _, imp := range imps {
			for _, d := range drivers {
				if imp == d || strings.HasPrefix(imp, d+"/") {
					t.Errorf("%s imports %s: only pkg/store/... may use a database driver", pkg, imp)
				}
			}
		}
	}
}

func TestPkgImportsNeitherAttestorsNorCmd(t *testing.T) {
	for pkg, imps := range imports(t) {
		if !strings.HasPrefix(pkg, module+"/pkg/") {
			continue
		}
		for _, imp := range imps {
			if strings.HasPrefix(imp, module+"/attestors/") || strings.HasPrefix(imp, module+"/cmd/") {
				t.Errorf("%s imports %s: pkg/ must not depend on attestors/ or cmd/", pkg, imp)
			}
		}
	}
}

func TestNhidctlImportsNoServerCode(t *testing.T) {
	forbidden := []string{module + "/pkg/server", module + "/pkg/store", module + "/pkg/ca", "go.etcd.io/bbolt"}
	for _, d := range deps(t, module+"/cmd/nhidctl") {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("nhidctl depends on %s: the CLI must talk to the server only through the admin API", d)
			}
		}
	}
}
