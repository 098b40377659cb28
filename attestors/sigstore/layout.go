package sigstore

import (
	"context"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// refNameAnnotation names a manifest in an OCI layout's index.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// layoutSource reads signatures from a local OCI image layout.
type layoutSource struct {
	path layout.Path
}

func newLayoutSource(dir string) (*layoutSource, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("OCILayout: %w", err)
	}
	return &layoutSource{path: layout.Path(dir)}, nil
}

// fetch reads the layout's index afresh, so signatures added to it are
// seen once the verifier's cache lets go of an image.
func (s *layoutSource) fetch(ctx context.Context, ref name.Digest, simple, bundles bool) (found, error) {
	if err := ctx.Err(); err != nil {
		return found{}, err
	}
	idx, err := s.path.ImageIndex()
	if err != nil {
		return found{}, fmt.Errorf("OCI layout %s: %w", s.path, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return found{}, fmt.Errorf("OCI layout %s: %w", s.path, err)
	}
	sigTag := SignatureTag(ref).TagStr()
	var f found
	for _, desc := range im.Manifests {
		switch {
		case simple && desc.Annotations[refNameAnnotation] == sigTag:
			img, err := idx.Image(desc.Digest)
			if err != nil {
				return found{}, fmt.Errorf("OCI layout %s: %s: %w", s.path, sigTag, err)
			}
			sigs, err := simpleSignaturesOf(img)
			if err != nil {
				return found{}, fmt.Errorf("OCI layout %s: %w", s.path, err)
			}
			f.simple = append(f.simple, sigs...)
		case bundles && maybeBundle(desc.ArtifactType) && len(f.bundles) < maxBundles:
			img, err := idx.Image(desc.Digest)
			if err != nil {
				return found{}, fmt.Errorf("OCI layout %s: bundle %s: %w", s.path, desc.Digest, err)
			}
			raw, err := bundleOf(img, ref)
			if err != nil {
				return found{}, fmt.Errorf("OCI layout %s: bundle %s: %w", s.path, desc.Digest, err)
			}
			if raw != nil {
				f.bundles = append(f.bundles, raw)
			}
		}
	}
	return f, nil
}
