package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const (
	// jwksMaxAge is how long fetched keys are used before a refetch.
	jwksMaxAge = 5 * time.Minute
	// jwksMinRefetch limits refetches for unknown key ids, so forged
	// tokens cannot make this service hammer nhid-server.
	jwksMinRefetch = 10 * time.Second
	nhidTimeout    = 5 * time.Second
	maxNHIDBody    = 1 << 20
)

// nhidClient talks to nhid-server's relying-party endpoint over mTLS,
// presenting this service's X.509-SVID and accepting only nhid-server's.
type nhidClient struct {
	base string
	http *http.Client

	mu      sync.Mutex
	keys    jose.JSONWebKeySet
	fetched time.Time
}

func newNHIDClient(addr string, serverID spiffeid.ID, src *workloadapi.X509Source) *nhidClient {
	conf := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(serverID))
	return &nhidClient{
		base: "https://" + addr,
		http: &http.Client{Transport: &http.Transport{TLSClientConfig: conf}, Timeout: nhidTimeout},
	}
}

// key returns the verification key kid of the trust domain's JWKS,
// refetching the JWKS when it is old or does not know kid.
func (c *nhidClient) key(ctx context.Context, kid string) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	age := time.Since(c.fetched)
	if found := c.keys.Key(kid); len(found) == 1 && age < jwksMaxAge {
		return found[0].Key, nil
	}
	if c.fetched.IsZero() || age >= jwksMinRefetch {
		if err := c.fetchJWKSLocked(ctx); err != nil {
			return nil, err
		}
	}
	found := c.keys.Key(kid)
	if len(found) != 1 {
		return nil, fmt.Errorf("unknown key id %q", kid)
	}
	return found[0].Key, nil
}

func (c *nhidClient) fetchJWKSLocked(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/jwks", nil)
	if err != nil {
		return err
	}
	body, err := c.do(req)
	if err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	c.keys, c.fetched = set, time.Now()
	return nil
}

// introspection is the part of an RFC 7662 answer this service reads.
type introspection struct {
	Active bool   `json:"active"`
	Scope  string `json:"scope"`
	Sub    string `json:"sub"`
}

// introspect asks nhid-server whether token is active now.
func (c *nhidClient) introspect(ctx context.Context, token string) (introspection, error) {
	form := url.Values{"token": {token}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/introspect", strings.NewReader(form))
	if err != nil {
		return introspection{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	body, err := c.do(req)
	if err != nil {
		return introspection{}, fmt.Errorf("introspect: %w", err)
	}
	var r introspection
	if err := json.Unmarshal(body, &r); err != nil {
		return introspection{}, fmt.Errorf("introspect: %w", err)
	}
	return r, nil
}

func (c *nhidClient) do(req *http.Request) ([]byte, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxNHIDBody))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
