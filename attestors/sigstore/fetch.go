package sigstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Bounds on what one image's signatures may make the agent read.
const (
	maxSignatureLayers = 64
	maxBundles         = 32
	maxReferrers       = 64
	maxPayloadSize     = 256 << 10
	maxBundleSize      = 1 << 20
)

// found is the raw signature material of one image.
type found struct {
	simple  []simpleSignature
	bundles [][]byte
}

// source finds an image's signatures; simple and bundles say which kinds
// are wanted.
type source interface {
	fetch(ctx context.Context, ref name.Digest, simple, bundles bool) (found, error)
}

func newSource(cfg Config) (source, error) {
	if cfg.OCILayout != "" {
		return newLayoutSource(cfg.OCILayout)
	}
	insecure := map[string]bool{}
	for i, r := range cfg.InsecureRegistries {
		if r == "" || strings.ContainsAny(r, "/ ") {
			return nil, fmt.Errorf("InsecureRegistries[%d] %q: want host or host:port", i, r)
		}
		insecure[r] = true
	}
	base, ok := remote.DefaultTransport.(*http.Transport)
	if !ok {
		return nil, errors.New("go-containerregistry's default transport is not an *http.Transport")
	}
	rt := &plainHTTPGuard{next: base.Clone(), insecure: insecure}
	return &registrySource{insecure: insecure, opts: []remote.Option{
		remote.WithTransport(rt),
		remote.WithAuthFromKeychain(cfg.Keychain),
	}}, nil
}

// plainHTTPGuard refuses plain HTTP to any registry but loopback ones and
// those configured as insecure: go-containerregistry would otherwise fall
// back to HTTP for private-network addresses, where anyone on the path
// could substitute signatures.
type plainHTTPGuard struct {
	next     http.RoundTripper
	insecure map[string]bool
}

func (g *plainHTTPGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.allowsPlainHTTP(req.URL.Host) {
		return nil, fmt.Errorf("refusing plain HTTP to registry %s: only loopback registries and insecure_registries may use it", req.URL.Host)
	}
	return g.next.RoundTrip(req)
}

func (g *plainHTTPGuard) allowsPlainHTTP(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if g.insecure[hostport] || g.insecure[host] || host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// registrySource reads signatures from the image's own repository.
type registrySource struct {
	insecure map[string]bool
	opts     []remote.Option
}

func (s *registrySource) fetch(ctx context.Context, ref name.Digest, simple, bundles bool) (found, error) {
	if s.insecure[ref.RegistryStr()] {
		var err error
		if ref, err = name.NewDigest(ref.String(), name.Insecure); err != nil {
			return found{}, err
		}
	}
	opts := append([]remote.Option{remote.WithContext(ctx)}, s.opts...)
	var f found
	if simple {
		sigs, err := s.simpleSignatures(ref, opts)
		if err != nil {
			return found{}, err
		}
		f.simple = sigs
	}
	if bundles {
		bs, err := s.bundles(ref, opts)
		if err != nil {
			return found{}, err
		}
		f.bundles = bs
	}
	return f, nil
}

// SignatureTag returns the tag cosign stores ref's key-based signatures
// under: "sha256-<hex>.sig" in ref's repository.
func SignatureTag(ref name.Digest) name.Tag {
	return ref.Context().Tag(strings.Replace(ref.DigestStr(), ":", "-", 1) + ".sig")
}

func (s *registrySource) simpleSignatures(ref name.Digest, opts []remote.Option) ([]simpleSignature, error) {
	img, err := remote.Image(SignatureTag(ref), opts...)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fetch signatures %s: %w", SignatureTag(ref), err)
	}
	return simpleSignaturesOf(img)
}

func (s *registrySource) bundles(ref name.Digest, opts []remote.Option) ([][]byte, error) {
	idx, err := remote.Referrers(ref, opts...)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list referrers of %s: %w", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("list referrers of %s: %w", ref, err)
	}
	var out [][]byte
	looked := 0
	for _, desc := range im.Manifests {
		if !maybeBundle(desc.ArtifactType) || len(out) == maxBundles || looked == maxReferrers {
			continue
		}
		looked++
		img, err := remote.Image(ref.Context().Digest(desc.Digest.String()), opts...)
		if err != nil {
			return nil, fmt.Errorf("fetch bundle manifest %s: %w", desc.Digest, err)
		}
		raw, err := bundleOf(img, ref)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", desc.Digest, err)
		}
		if raw != nil {
			out = append(out, raw)
		}
	}
	return out, nil
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

// simpleSignaturesOf reads the simple-signing layers of a .sig image.
func simpleSignaturesOf(img v1.Image) ([]simpleSignature, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("signature manifest: %w", err)
	}
	var out []simpleSignature
	for i, desc := range m.Layers {
		if i == maxSignatureLayers {
			break
		}
		b64, ok := desc.Annotations[SignatureAnnotation]
		if desc.MediaType != SimpleSigningMediaType || !ok || desc.Size > maxPayloadSize {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue // a malformed entry cannot verify; the others still may
		}
		payload, err := readBlob(img, desc.Digest, maxPayloadSize)
		if err != nil {
			return nil, fmt.Errorf("signature payload %s: %w", desc.Digest, err)
		}
		out = append(out, simpleSignature{payload: payload, signature: sig, keyless: keylessMaterialOf(desc.Annotations)})
	}
	return out, nil
}

// emptyConfigMediaType is the OCI empty descriptor's media type, which
// bundle manifests use for their config.
const emptyConfigMediaType = "application/vnd.oci.empty.v1+json"

// maybeBundle says whether a referrer of this artifact type may be a
// bundle. Some registries report the config's media type instead of the
// manifest's artifactType (the referrers API's first drafts did), so an
// empty or empty-config type is looked at too; bundleOf decides.
func maybeBundle(artifactType string) bool {
	return strings.HasPrefix(artifactType, BundleMediaTypePrefix) ||
		artifactType == "" || artifactType == emptyConfigMediaType
}

// bundleOf reads the bundle layer of a referrer manifest; nil when the
// manifest is not a bundle about ref.
func bundleOf(img v1.Image, ref name.Digest) ([]byte, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	if m.Subject == nil || m.Subject.Digest.String() != ref.DigestStr() {
		return nil, nil
	}
	if !strings.HasPrefix(m.ArtifactType, BundleMediaTypePrefix) && !strings.HasPrefix(string(m.Config.MediaType), BundleMediaTypePrefix) {
		return nil, nil
	}
	for _, desc := range m.Layers {
		if strings.HasPrefix(string(desc.MediaType), BundleMediaTypePrefix) && desc.Size <= maxBundleSize {
			return readBlob(img, desc.Digest, maxBundleSize)
		}
	}
	return nil, nil
}

// readBlob reads a layer's stored bytes (verified against their digest
// by go-containerregistry) up to limit.
func readBlob(img v1.Image, h v1.Hash, limit int64) ([]byte, error) {
	l, err := img.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}
