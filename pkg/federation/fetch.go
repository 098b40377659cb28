package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Bounds of one fetch.
const (
	fetchTimeout     = 30 * time.Second
	maxFetchRedirect = 3
)

// fetcher gets a partner's bundle document from its endpoint.
type fetcher struct {
	rel Relationship
	// roots verify a ProfileWeb endpoint: the system's plus CAFile's.
	roots *x509.CertPool
}

func newFetcher(rel Relationship) (*fetcher, error) {
	f := &fetcher{rel: rel}
	if rel.Profile != ProfileWeb {
		return f, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if rel.CAFile != "" {
		certs, err := LoadCAFile(rel.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CAFile: %w", err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	f.roots = pool
	return f, nil
}

// tlsConfig authenticates the endpoint: with ProfileSPIFFE, its
// X.509-SVID must chain to trusted (the partner's bundle as we hold it
// now) and be exactly the configured endpoint ID; with ProfileWeb, its
// certificate must chain to the Web PKI roots and name the URL's host.
func (f *fetcher) tlsConfig(trusted *typesv1.Bundle) (*tls.Config, error) {
	if f.rel.Profile == ProfileWeb {
		return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: f.roots}, nil
	}
	if trusted == nil || len(trusted.GetX509Authorities()) == 0 {
		return nil, fmt.Errorf("no bundle of %q is stored to authenticate its endpoint with: "+
			"configure bootstrap_bundle or set one with \"nhidctl bundle set\"", f.rel.TrustDomain.Name())
	}
	certs := make([]*x509.Certificate, 0, len(trusted.GetX509Authorities()))
	for i, a := range trusted.GetX509Authorities() {
		c, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return nil, fmt.Errorf("stored bundle of %q: x509_authorities[%d]: %w", f.rel.TrustDomain.Name(), i, err)
		}
		certs = append(certs, c)
	}
	src := x509bundle.FromX509Authorities(f.rel.TrustDomain, certs)
	cfg := tlsconfig.TLSClientConfig(src, tlsconfig.AuthorizeID(f.rel.EndpointID))
	cfg.MinVersion = tls.VersionTLS12
	return cfg, nil
}

// fetch GETs the document over a connection of its own (no keep-alive:
// the next fetch is minutes away and may trust other authorities).
// Errors never repeat the URL, whose path might be a capability.
func (f *fetcher) fetch(ctx context.Context, trusted *typesv1.Bundle) ([]byte, error) {
	tlsCfg, err := f.tlsConfig(trusted)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 20 * time.Second,
		DisableKeepAlives:     true,
		ForceAttemptHTTP2:     true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: fetchTimeout, CheckRedirect: httpsRedirects}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.rel.URL, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", unwrapURL(err))
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET bundle: %w", unwrapURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET bundle: endpoint answered %s", resp.Status)
	}
	doc, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", unwrapURL(err))
	}
	if len(doc) > MaxDocumentSize {
		return nil, fmt.Errorf("read bundle: larger than %d bytes", MaxDocumentSize)
	}
	return doc, nil
}

// httpsRedirects follows a few redirects, only to valid bundle endpoint
// URLs (SPIFFE Federation sections 5.2.1.4 and 5.2.2.4): https, since a
// redirect to plain HTTP would hand the bundle to anyone on the path, and
// without userinfo (sections 5.2.1.1 and 5.2.2.1). The TLS checks of the
// profile apply to the target as to the configured URL: the transport is
// the same.
func httpsRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= maxFetchRedirect {
		return fmt.Errorf("more than %d redirects", maxFetchRedirect)
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to scheme %q refused: bundles are only fetched over HTTPS", req.URL.Scheme)
	}
	if req.URL.User != nil {
		return errors.New("redirect to a URL with userinfo refused: it is not a bundle endpoint URL")
	}
	return nil
}

// unwrapURL drops net/http's "Get \"<url>\": " wrapping.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
