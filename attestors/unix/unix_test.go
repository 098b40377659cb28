package unix

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
)

func TestAttestor_Conformance(t *testing.T) {
	attestortest.RunWorkload(t, newAttestor(t, Config{}))
}

func TestAttest_ChildGetsPathAndHashOfItsBinary(t *testing.T) {
	bin := copyBinary(t, sleepBinary(t), t.TempDir(), "worker", nil)
	cmd := startSleeper(t, bin, nil)

	sels := attest(t, newAttestor(t, Config{}), cmd.Process.Pid)
	id := strconv.Itoa(os.Geteuid())
	got := map[string][]string{
		"uid":    values(sels, "uid"),
		"path":   values(sels, "path"),
		"sha256": values(sels, "sha256"),
	}
	want := map[string][]string{
		"uid":    {id},
		"path":   {bin},
		"sha256": {sha256File(t, bin)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("selectors (-want +got):\n%s\nall: %v", diff, strs(sels))
	}
}

func TestAttest_DifferentBinariesWithSameUIDGetDifferentHashes(t *testing.T) {
	dir := t.TempDir()
	a := newAttestor(t, Config{})
	binA := copyBinary(t, sleepBinary(t), dir, "a", nil)
	binB := copyBinary(t, sleepBinary(t), dir, "b", []byte("different"))
	selsA := attest(t, a, startSleeper(t, binA, nil).Process.Pid)
	selsB := attest(t, a, startSleeper(t, binB, nil).Process.Pid)

	if diff := cmp.Diff(values(selsA, "uid"), values(selsB, "uid")); diff != "" {
		t.Fatalf("uids differ (-a +b):\n%s", diff)
	}
	hashA, hashB := values(selsA, "sha256"), values(selsB, "sha256")
	if diff := cmp.Diff([]string{sha256File(t, binA)}, hashA); diff != "" {
		t.Errorf("sha256 of a (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{sha256File(t, binB)}, hashB); diff != "" {
		t.Errorf("sha256 of b (-want +got):\n%s", diff)
	}
	if cmp.Equal(hashA, hashB) {
		t.Errorf("different binaries got the same sha256 %v", hashA)
	}
}

func TestAttest_OversizedBinaryGetsNoHashAndOneLogLine(t *testing.T) {
	var logs bytes.Buffer
	a := newAttestor(t, Config{MaxHashSize: 1, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	bin := copyBinary(t, sleepBinary(t), t.TempDir(), "big", nil)
	pid := startSleeper(t, bin, nil).Process.Pid

	for range 3 {
		sels := attest(t, a, pid)
		if got := values(sels, "sha256"); len(got) != 0 {
			t.Fatalf("sha256 selectors = %v, want none over MaxHashSize", got)
		}
		if diff := cmp.Diff([]string{bin}, values(sels, "path")); diff != "" {
			t.Fatalf("path (-want +got):\n%s", diff)
		}
	}
	if n := strings.Count(logs.String(), "larger than the hash limit"); n != 1 {
		t.Errorf("logged the oversized binary %d times, want once:\n%s", n, logs.String())
	}
}

// The running binary is what counts: deleting or replacing the file on
// disk after start must not change the hash, and the path loses the
// kernel's " (deleted)" marker.
func TestAttest_BinaryChangedOnDiskAfterStart(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, bin string)
	}{
		{"deleted", func(t *testing.T, bin string) {
			if err := os.Remove(bin); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced by rename", func(t *testing.T, bin string) {
			other := copyBinary(t, sleepBinary(t), filepath.Dir(bin), "other", []byte("v2"))
			if err := os.Rename(other, bin); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := copyBinary(t, sleepBinary(t), t.TempDir(), "worker", []byte("v1"))
			original := sha256File(t, bin)
			pid := startSleeper(t, bin, nil).Process.Pid
			tt.change(t, bin)

			sels := attest(t, newAttestor(t, Config{}), pid)
			got := [][]string{values(sels, "path"), values(sels, "sha256")}
			want := [][]string{{bin}, {original}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("[path, sha256] (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAttest_BinaryNamedLikeDeletedKeepsItsName(t *testing.T) {
	bin := copyBinary(t, sleepBinary(t), t.TempDir(), "worker (deleted)", nil)
	sels := attest(t, newAttestor(t, Config{}), startSleeper(t, bin, nil).Process.Pid)
	if diff := cmp.Diff([]string{bin}, values(sels, "path")); diff != "" {
		t.Errorf("path (-want +got):\n%s", diff)
	}
}

func TestAttest_EffectiveAndSupplementaryIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a process as another user needs root")
	}
	a := newAttestor(t, Config{})
	a.lookupUser = fakeNames(map[string]string{"65534": "nobody"})
	a.lookupGroup = fakeNames(map[string]string{"4242": "builders"})
	cmd := startSleeper(t, sleepBinary(t), func(c *exec.Cmd) {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: 65534, Gid: 4242, Groups: []uint32{1234, 5678},
		}}
	})

	sels := attest(t, a, cmd.Process.Pid)
	want := []string{
		"unix:uid:65534", "unix:gid:4242", "unix:user:nobody", "unix:group:builders",
		"unix:supplementary_gid:1234", "unix:supplementary_gid:5678",
		"unix:path:" + sleepBinary(t), "unix:sha256:" + sha256File(t, sleepBinary(t)),
	}
	if diff := cmp.Diff(want, strs(sels)); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
}

func fakeNames(names map[string]string) func(string) (string, error) {
	return func(id string) (string, error) {
		if n, ok := names[id]; ok {
			return n, nil
		}
		return "", errNoName
	}
}

func TestAttest_ConcurrentAttestationsOfManyBinaries(t *testing.T) {
	dir := t.TempDir()
	a := newAttestor(t, Config{})
	type proc struct{ pid, sum string }
	var procs []proc
	for i := range 4 {
		bin := copyBinary(t, sleepBinary(t), dir, "w"+strconv.Itoa(i), []byte{byte(i)})
		procs = append(procs, proc{strconv.Itoa(startSleeper(t, bin, nil).Process.Pid), sha256File(t, bin)})
	}
	var wg sync.WaitGroup
	for i := range 40 {
		p := procs[i%len(procs)]
		wg.Go(func() {
			pid, _ := strconv.Atoi(p.pid)
			sels, err := a.Attest(context.Background(), int32(pid))
			if err != nil {
				t.Errorf("Attest(%s): %v", p.pid, err)
				return
			}
			if diff := cmp.Diff([]string{p.sum}, values(sels, "sha256")); diff != "" {
				t.Errorf("pid %s sha256 (-want +got):\n%s", p.pid, diff)
			}
		})
	}
	wg.Wait()
}
