package main

import (
	"os"
	"path/filepath"

	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/pkg/config"
)

// workloadAttestorSettings is the workload_attestors section: optional
// workload attestors, each on when its section is present (an empty
// section, "container: {}", turns one on with its defaults).
type workloadAttestorSettings struct {
	Container *containerSettings `yaml:"container"`
	Sigstore  *sigstoreSettings  `yaml:"sigstore"`
	K8s       *k8sSettings       `yaml:"k8s"` // k8s.go
}

// containerSettings configure the container attestor.
type containerSettings struct {
	ContainerdSocket string `yaml:"containerd_socket"`
	Namespace        string `yaml:"namespace"`
	CacheTTL         string `yaml:"cache_ttl"`
	CacheSize        int    `yaml:"cache_size"`
}

// sigstoreSettings configure the sigstore attestor.
type sigstoreSettings struct {
	PublicKeys         []publicKeySetting `yaml:"public_keys"`
	TrustedRoot        string             `yaml:"trusted_root"`
	Identities         []identitySetting  `yaml:"identities"`
	SkipSCT            bool               `yaml:"skip_sct"`
	CacheTTL           string             `yaml:"cache_ttl"`
	CacheSize          int                `yaml:"cache_size"`
	InsecureRegistries []string           `yaml:"insecure_registries"`
	OCILayout          string             `yaml:"oci_layout"`
}

// publicKeySetting is a trusted signing key in a PEM file.
type publicKeySetting struct {
	Name string `yaml:"name"`
	File string `yaml:"file"`
}

// identitySetting is an accepted keyless signer.
type identitySetting struct {
	Subject       string `yaml:"subject"`
	SubjectRegexp string `yaml:"subject_regexp"`
	Issuer        string `yaml:"issuer"`
	IssuerRegexp  string `yaml:"issuer_regexp"`
}

// convert checks the section and returns the attestors' configs; nil for
// a section that is absent. Files are read here, so a missing key fails
// the agent's start with the setting's path.
func (w workloadAttestorSettings) convert(errs *config.Errors) (*container.Config, *sigstore.Config) {
	const base = "agent.workload_attestors"
	var cc *container.Config
	if c := w.Container; c != nil {
		path := config.Join(base, "container")
		cc = &container.Config{
			ContainerdSocket: c.ContainerdSocket,
			Namespace:        c.Namespace,
			CacheTTL:         config.Duration(errs, config.Join(path, "cache_ttl"), c.CacheTTL),
			CacheSize:        c.CacheSize,
		}
		if c.ContainerdSocket != "" && !filepath.IsAbs(c.ContainerdSocket) {
			errs.Addf(config.Join(path, "containerd_socket"), "%q must be an absolute path", c.ContainerdSocket)
		}
		if c.CacheSize < 0 {
			errs.Addf(config.Join(path, "cache_size"), "must not be negative, got %d", c.CacheSize)
		}
	}
	if w.Sigstore == nil {
		return cc, nil
	}
	if cc == nil && w.K8s == nil {
		errs.Addf(config.Join(base, "sigstore"), "needs the container section too: it verifies the images the container attestor finds")
	}
	return cc, w.Sigstore.convert(errs, config.Join(base, "sigstore"))
}

func (s *sigstoreSettings) convert(errs *config.Errors, path string) *sigstore.Config {
	out := &sigstore.Config{
		SkipSCT:            s.SkipSCT,
		CacheTTL:           config.Duration(errs, config.Join(path, "cache_ttl"), s.CacheTTL),
		CacheSize:          s.CacheSize,
		InsecureRegistries: s.InsecureRegistries,
		OCILayout:          s.OCILayout,
	}
	for i, k := range s.PublicKeys {
		p := config.Index(config.Join(path, "public_keys"), i)
		if k.Name == "" {
			errs.Addf(config.Join(p, "name"), "must be set: it names the key in sigstore:signed_by selectors")
		}
		pem, ok := readSettingFile(errs, config.Join(p, "file"), k.File)
		if ok {
			out.PublicKeys = append(out.PublicKeys, sigstore.PublicKey{Name: k.Name, PEM: pem})
		}
	}
	if s.TrustedRoot != "" {
		out.TrustedRoot, _ = readSettingFile(errs, config.Join(path, "trusted_root"), s.TrustedRoot)
	}
	for _, id := range s.Identities {
		out.Identities = append(out.Identities, sigstore.Identity(id))
	}
	if len(s.PublicKeys) == 0 && s.TrustedRoot == "" {
		errs.Addf(path, "set public_keys, trusted_root with identities, or both")
	}
	if s.OCILayout != "" && !filepath.IsAbs(s.OCILayout) {
		errs.Addf(config.Join(path, "oci_layout"), "%q must be an absolute path", s.OCILayout)
	}
	return out
}

// readSettingFile reads the file a setting names.
func readSettingFile(errs *config.Errors, path, file string) ([]byte, bool) {
	if file == "" {
		errs.Addf(path, "must be set")
		return nil, false
	}
	data, err := os.ReadFile(file)
	if err != nil {
		errs.Addf(path, "%v", err)
		return nil, false
	}
	return data, true
}
