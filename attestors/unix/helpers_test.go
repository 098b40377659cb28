package unix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/selector"
)

const waitTimeout = 10 * time.Second

func newAttestor(t testing.TB, cfg Config) *Attestor {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// copyBinary copies src into dir as name, mode 0755, followed by extra
// bytes (an ELF file runs the same with trailing data, but hashes apart).
func copyBinary(t testing.TB, src, dir, name string, extra []byte) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("read %s: %v", src, err)
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, append(data, extra...), 0o755); err != nil {
		t.Fatalf("write %s: %v", dst, err)
	}
	return dst
}

// startSleeper runs bin (a copy of sleep) for a long time and stops it at
// cleanup. ETXTBSY is retried: a just-written binary can be briefly held
// open for writing by a child forked concurrently elsewhere in the process.
func startSleeper(t testing.TB, bin string, mutate func(*exec.Cmd)) *exec.Cmd {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		cmd := exec.Command(bin, "600")
		if mutate != nil {
			mutate(cmd)
		}
		err := cmd.Start()
		if err == nil {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			return cmd
		}
		if !errors.Is(err, syscall.ETXTBSY) || time.Now().After(deadline) {
			t.Fatalf("start %s: %v", bin, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sha256File(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func attest(t testing.TB, a *Attestor, pid int) []selector.Selector {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sels, err := a.Attest(ctx, int32(pid))
	if err != nil {
		t.Fatalf("Attest(%d): %v", pid, err)
	}
	return sels
}

// values returns the values of the selectors of one kind ("path", "uid").
func values(sels []selector.Selector, kind string) []string {
	var out []string
	for _, s := range sels {
		if v, ok := strings.CutPrefix(s.Value(), kind+":"); ok {
			out = append(out, v)
		}
	}
	return out
}

func strs(sels []selector.Selector) []string {
	out := make([]string, 0, len(sels))
	for _, s := range sels {
		out = append(out, s.String())
	}
	return out
}

// sleepBinary is the real binary behind /bin/sleep (often a symlink chain).
func sleepBinary(t testing.TB) string {
	t.Helper()
	p, err := filepath.EvalSymlinks("/bin/sleep")
	if err != nil {
		t.Fatalf("no /bin/sleep to run as a workload: %v", err)
	}
	return p
}
