// Package sigstoretest makes what the sigstore attestor's tests verify: an
// OCI registry on loopback (go-containerregistry's in-process registry,
// with the referrers API), images pushed to it, cosign signatures made with
// real keys, and keyless Sigstore bundles from sigstore-go's virtual
// Sigstore (a Fulcio CA, a Rekor log and a timestamp authority of its own).
package sigstoretest

import (
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Registry is an OCI registry on loopback.
type Registry struct {
	// Host is its host:port.
	Host     string
	requests atomic.Int64
	failing  atomic.Bool
}

// StartRegistry serves an OCI registry on 127.0.0.1 until the test ends.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return StartRegistryOn(t, "127.0.0.1")
}

// StartRegistryOn serves an OCI registry on ip (plain HTTP) until the
// test ends.
func StartRegistryOn(t testing.TB, ip string) *Registry {
	t.Helper()
	r := &Registry{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		if r.failing.Load() {
			http.Error(w, "registry is down for the test", http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	srv.Listener = lis
	srv.Start()
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// Requests is how many requests the registry has received.
func (r *Registry) Requests() int64 { return r.requests.Load() }

// SetFailing makes every request fail with 503 Service Unavailable (true)
// or be served again (false).
func (r *Registry) SetFailing(fail bool) { r.failing.Store(fail) }

// Push writes img to repoTag ("host:port/repo:tag") over plain HTTP and
// returns the image's digest reference.
func Push(t testing.TB, repoTag string, img v1.Image) name.Digest {
	t.Helper()
	ref, err := name.ParseReference(repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.Context().Digest(d.String())
}

// PushRandom pushes a new random image to repoTag.
func PushRandom(t testing.TB, repoTag string) name.Digest {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	return Push(t, repoTag, img)
}

// rawManifest is a manifest written as given.
type rawManifest struct {
	body      []byte
	mediaType types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.body, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

// emptyConfig is the OCI empty descriptor's content.
var emptyConfig = []byte("{}")

// pushArtifact pushes a manifest of artifactType with one layer and an
// empty config, optionally about subject, and returns its descriptor.
func pushArtifact(t testing.TB, repo name.Repository, artifactType string, layer []byte, layerType types.MediaType, annotations map[string]string, subject *v1.Descriptor) v1.Hash {
	t.Helper()
	cfg := static.NewLayer(emptyConfig, "application/vnd.oci.empty.v1+json")
	lay := static.NewLayer(layer, layerType)
	for _, l := range []v1.Layer{cfg, lay} {
		if err := remote.WriteLayer(repo, l); err != nil {
			t.Fatalf("push blob: %v", err)
		}
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  artifactType,
		Config:        descriptor(t, cfg, nil),
		Layers:        []v1.Descriptor{descriptor(t, lay, annotations)},
		Subject:       subject,
	}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := v1.SHA256(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(repo.Digest(h.String()), rawManifest{body: body, mediaType: types.OCIManifestSchema1}); err != nil {
		t.Fatalf("push manifest: %v", err)
	}
	return h
}

func descriptor(t testing.TB, l v1.Layer, annotations map[string]string) v1.Descriptor {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	size, err := l.Size()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := l.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: size, Annotations: annotations}
}
