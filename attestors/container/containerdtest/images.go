package containerdtest

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// BuildStatic builds the Go main package pkg (a path relative to the
// module root, "./test/e2e/probe") as a static binary and returns its path.
func BuildStatic(t testing.TB, pkg string) string {
	t.Helper()
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	out := filepath.Join(t.TempDir(), path.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Image returns a one-layer image for this machine's platform holding the
// file at src as an executable at dst, run as the image's entrypoint.
// extra is appended to the file, so the same binary can make images with
// different digests.
func Image(t testing.TB, src, dst, extra string) v1.Image {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	layerTar := tarOf(t, dst, append(data, extra...))
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		t.Fatalf("image layer: %v", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatalf("image: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = []string{dst}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("image config: %v", err)
	}
	return img
}

func tarOf(t testing.TB, name string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := path.Dir(strings.TrimPrefix(name, "/"))
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(name, "/"), Mode: 0o755, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Pull pulls ref (from a registry on loopback, over plain HTTP) into the
// daemon and unpacks it.
func (d *Daemon) Pull(t testing.TB, ref string) containerd.Image {
	t.Helper()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	img, err := d.client.Pull(Context(t), ref, containerd.WithPullUnpack, containerd.WithResolver(resolver))
	if err != nil {
		t.Fatalf("containerd pull %s: %v", ref, err)
	}
	return img
}

// RunOptions shape a container.
type RunOptions struct {
	// Args replace the image's entrypoint when set.
	Args []string
	// Env is added to the process's environment.
	Env []string
	// Labels are the container's labels.
	Labels map[string]string
	// Mounts are bind mounts: container path → host path.
	Mounts map[string]string
}

// Container is a running container.
type Container struct {
	// ID is the container ID.
	ID string
	// PID is the host pid of the container's first process.
	PID int32
	// LogPath collects the process's stdout and stderr.
	LogPath string
}

// Log returns the process's output so far.
func (c *Container) Log() string {
	b, _ := os.ReadFile(c.LogPath)
	return string(b)
}

// Run creates and starts a container of img with id; it is killed and
// removed when the test ends.
func (d *Daemon) Run(t testing.TB, img containerd.Image, id string, o RunOptions) *Container {
	t.Helper()
	ctx := Context(t)
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithEnv(o.Env), oci.WithMounts(bindMounts(o.Mounts))}
	if len(o.Args) > 0 {
		specOpts = append(specOpts, oci.WithProcessArgs(o.Args...))
	}
	c, err := d.client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id+"-rootfs", img),
		containerd.WithContainerLabels(o.Labels),
		containerd.WithNewSpec(specOpts...))
	if err != nil {
		t.Fatalf("create container %s: %v", id, err)
	}
	logPath := filepath.Join(d.Dir, id+".log")
	task, err := c.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
		t.Fatalf("create task of %s: %v", id, err)
	}
	t.Cleanup(func() {
		ctx := Context(t)
		_ = task.Kill(ctx, syscall.SIGKILL)
		if ch, err := task.Wait(ctx); err == nil {
			<-ch
		}
		_, _ = task.Delete(ctx)
		_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
	})
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start container %s: %v", id, err)
	}
	return &Container{ID: id, PID: int32(task.Pid()), LogPath: logPath}
}

func bindMounts(m map[string]string) []specs.Mount {
	var out []specs.Mount
	for dst, src := range m {
		out = append(out, specs.Mount{Destination: dst, Source: src, Type: "bind", Options: []string{"rbind", "rw"}})
	}
	return out
}
