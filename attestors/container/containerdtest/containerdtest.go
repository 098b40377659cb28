// Package containerdtest runs a real containerd for tests: a private
// daemon (its own root, state directory and socket) started from the
// Debian containerd and runc packages, images built in the test and
// pulled from a registry on loopback, and containers whose process ids
// the attestors are pointed at.
//
// It needs root, containerd and runc. Outside CI a test without them is
// skipped with the reason; with CI=true it fails, since CI installs them.
package containerdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Namespace is the containerd namespace the helpers use.
const Namespace = "nhid-test"

// waitTimeout bounds every wait; generous, since tests check behaviour.
const waitTimeout = 30 * time.Second

// Daemon is a running private containerd.
type Daemon struct {
	// Socket is containerd's gRPC socket.
	Socket string
	// Dir holds the daemon's root, state, config and log.
	Dir    string
	client *containerd.Client
}

// Require skips the test (or fails it in CI) unless this machine can run
// containerd with runc: root, both binaries on PATH.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (containerd and runc need it)")
	}
	for _, bin := range []string{"containerd", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" on PATH (apt-get install -y containerd runc)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "cannot run containers here: missing " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Start starts a private containerd and stops it when the test ends.
func Start(t testing.TB) *Daemon {
	t.Helper()
	Require(t)
	// Unix socket paths are limited to 108 bytes; t.TempDir() can exceed it.
	dir, err := os.MkdirTemp("", "nhid-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Socket: filepath.Join(dir, "containerd.sock"), Dir: dir}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(d.config()), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() { d.stop(t, cmd, exited) })
	d.client, err = containerd.New(d.Socket, containerd.WithDefaultNamespace(Namespace))
	if err != nil {
		t.Fatalf("containerd client: %v", err)
	}
	d.waitServing(t, exited)
	return d
}

func (d *Daemon) config() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(d.Dir, "root"), filepath.Join(d.Dir, "state"), d.Socket, d.Socket+".ttrpc")
}

func (d *Daemon) waitServing(t testing.TB, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		serving, err := d.client.IsServing(ctx)
		cancel()
		if serving {
			return
		}
		select {
		case werr := <-exited:
			t.Fatalf("containerd exited: %v\n%s", werr, d.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not serving within %s: %v\n%s", waitTimeout, err, d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends every container's process, then the daemon, then removes its
// directory (unmounting what the snapshotter left mounted).
func (d *Daemon) stop(t testing.TB, cmd *exec.Cmd, exited <-chan error) {
	_ = d.client.Close()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(waitTimeout):
		_ = cmd.Process.Kill()
		<-exited
	}
	if t.Failed() {
		t.Logf("containerd log:\n%s", d.Log())
	}
	unmountUnder(d.Dir)
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Logf("remove containerd dir: %v", err)
	}
}

// unmountUnder lazily unmounts every mount below dir, deepest first.
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// Log returns the daemon's log.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "containerd.log"))
	return string(b)
}

// Client returns a client of the daemon whose default namespace is
// Namespace; the daemon closes it.
func (d *Daemon) Client() *containerd.Client { return d.client }

// Context returns a context in Namespace bounded by the wait timeout.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), Namespace), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}
