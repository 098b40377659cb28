package main

import (
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/federation"
	"github.com/nhid/nhid/pkg/server"
)

// maxFederatesWith bounds server.federation.federates_with: each is a
// goroutine polling a partner.
const maxFederatesWith = 100

// flagFederationAddress sets federation.bundle_endpoint.address.
const flagFederationAddress = "federation-address"

// federationSettings configure SPIFFE federation (docs/federation.md).
type federationSettings struct {
	// BundleEndpoint publishes this trust domain's bundle to partners.
	BundleEndpoint bundleEndpointSettings `yaml:"bundle_endpoint"`
	// FederatesWith are the partners whose bundles are fetched.
	FederatesWith []federatesWithSettings `yaml:"federates_with"`
}

type bundleEndpointSettings struct {
	Address     string `yaml:"address"`
	Profile     string `yaml:"profile"`
	CertFile    string `yaml:"cert_file"`
	KeyFile     string `yaml:"key_file"`
	RefreshHint string `yaml:"refresh_hint"`
}

type federatesWithSettings struct {
	TrustDomain       string `yaml:"trust_domain"`
	BundleEndpointURL string `yaml:"bundle_endpoint_url"`
	Profile           string `yaml:"profile"`
	EndpointSPIFFEID  string `yaml:"endpoint_spiffe_id"`
	BootstrapBundle   string `yaml:"bootstrap_bundle"`
	CAFile            string `yaml:"ca_file"`
}

// federationConfig converts the federation section. Bootstrap bundles,
// CA files and the endpoint's certificate are read here to report a
// problem with its path (the server reads them again).
func federationConfig(errs *config.Errors, path string, own spiffeid.TrustDomain, f federationSettings) server.FederationConfig {
	out := server.FederationConfig{BundleEndpoint: bundleEndpointConfig(errs, config.Join(path, "bundle_endpoint"), f.BundleEndpoint)}
	p := config.Join(path, "federates_with")
	if len(f.FederatesWith) > maxFederatesWith {
		errs.Addf(p, "%d relationships, at most %d allowed", len(f.FederatesWith), maxFederatesWith)
		return out
	}
	seen := make(map[spiffeid.TrustDomain]int, len(f.FederatesWith))
	for i, fw := range f.FederatesWith {
		rel := relationshipConfig(errs, config.Index(p, i), own, fw)
		if j, dup := seen[rel.TrustDomain]; dup && !rel.TrustDomain.IsZero() {
			errs.Addf(config.Join(config.Index(p, i), "trust_domain"), "%q is already the trust domain of %s", rel.TrustDomain.Name(), config.Index(p, j))
		} else {
			seen[rel.TrustDomain] = i
		}
		out.Relationships = append(out.Relationships, rel)
	}
	return out
}

func bundleEndpointConfig(errs *config.Errors, p string, be bundleEndpointSettings) server.BundleEndpointConfig {
	if be.Address == "" {
		if be != (bundleEndpointSettings{}) {
			errs.Addf(config.Join(p, "address"), "required when other bundle_endpoint settings are given")
		}
		return server.BundleEndpointConfig{}
	}
	out := server.BundleEndpointConfig{
		Address:     address(errs, config.Join(p, "address"), be.Address, false),
		Profile:     federation.ProfileSPIFFE,
		RefreshHint: ttl(errs, config.Join(p, "refresh_hint"), be.RefreshHint, federation.MinRefreshInterval, federation.MaxRefreshInterval),
	}
	if be.Profile != "" {
		prof, err := federation.ParseProfile(be.Profile)
		if err != nil {
			errs.Addf(config.Join(p, "profile"), "%v", err)
			return out
		}
		out.Profile = prof
	}
	if out.Profile == federation.ProfileSPIFFE {
		for _, f := range []struct{ key, v string }{{"cert_file", be.CertFile}, {"key_file", be.KeyFile}} {
			if f.v != "" {
				errs.Addf(config.Join(p, f.key), "only used with profile https_web: https_spiffe presents the server's X.509-SVID")
			}
		}
		return out
	}
	switch {
	case be.CertFile == "":
		errs.Addf(config.Join(p, "cert_file"), "required with profile https_web")
	case be.KeyFile == "":
		errs.Addf(config.Join(p, "key_file"), "required with profile https_web")
	default:
		if err := federation.LoadKeyPair(be.CertFile, be.KeyFile); err != nil {
			errs.Addf(config.Join(p, "cert_file"), "%v", err)
		}
	}
	out.CertFile, out.KeyFile = be.CertFile, be.KeyFile
	return out
}

// relationshipConfig converts one federates_with entry.
func relationshipConfig(errs *config.Errors, p string, own spiffeid.TrustDomain, fw federatesWithSettings) federation.Relationship {
	var rel federation.Relationship
	tdPath := config.Join(p, "trust_domain")
	if fw.TrustDomain == "" {
		errs.Addf(tdPath, "required: the partner's trust domain name")
	} else if td, err := spiffeid.TrustDomainFromString(fw.TrustDomain); err != nil || td.Name() != fw.TrustDomain {
		errs.Addf(tdPath, "%q is not a trust domain name", fw.TrustDomain)
	} else if td == own {
		errs.Addf(tdPath, "%q is this server's own trust domain", fw.TrustDomain)
	} else {
		rel.TrustDomain = td
	}
	if err := federation.CheckURL(fw.BundleEndpointURL); err != nil {
		errs.Addf(config.Join(p, "bundle_endpoint_url"), "%v", err)
	}
	rel.URL = fw.BundleEndpointURL
	if fw.Profile == "" {
		errs.Addf(config.Join(p, "profile"), "required: %s or %s", federation.ProfileSPIFFE, federation.ProfileWeb)
	} else if prof, err := federation.ParseProfile(fw.Profile); err != nil {
		errs.Addf(config.Join(p, "profile"), "%v", err)
	} else {
		rel.Profile = prof
	}
	rel.EndpointID = endpointID(errs, config.Join(p, "endpoint_spiffe_id"), rel, fw.EndpointSPIFFEID)
	if fw.CAFile != "" {
		if rel.Profile == federation.ProfileSPIFFE {
			errs.Addf(config.Join(p, "ca_file"), "only used with profile https_web")
		} else if _, err := federation.LoadCAFile(fw.CAFile); err != nil {
			errs.Addf(config.Join(p, "ca_file"), "%v", err)
		}
		rel.CAFile = fw.CAFile
	}
	if fw.BootstrapBundle != "" {
		if !rel.TrustDomain.IsZero() {
			if _, err := federation.LoadBundleFile(rel.TrustDomain, fw.BootstrapBundle); err != nil {
				errs.Addf(config.Join(p, "bootstrap_bundle"), "%v", err)
			}
		}
		rel.BootstrapBundle = fw.BootstrapBundle
	}
	return rel
}

// endpointID parses endpoint_spiffe_id: required with https_spiffe and in
// the partner's trust domain, not used with https_web.
func endpointID(errs *config.Errors, p string, rel federation.Relationship, s string) spiffeid.ID {
	switch {
	case rel.Profile == federation.ProfileWeb && s != "":
		errs.Addf(p, "only used with profile https_spiffe")
		return spiffeid.ID{}
	case rel.Profile == federation.ProfileSPIFFE && s == "":
		errs.Addf(p, "required with profile https_spiffe: the SPIFFE ID the endpoint presents (an nhid server's is spiffe://<trust domain>/nhid/server)")
		return spiffeid.ID{}
	case s == "":
		return spiffeid.ID{}
	}
	id, err := spiffeid.FromString(s)
	switch {
	case err != nil:
		errs.Addf(p, "%q is not a SPIFFE ID: %v", s, err)
	case !rel.TrustDomain.IsZero() && !id.MemberOf(rel.TrustDomain):
		errs.Addf(p, "%q is not in trust domain %q", s, rel.TrustDomain.Name())
	default:
		return id
	}
	return spiffeid.ID{}
}
