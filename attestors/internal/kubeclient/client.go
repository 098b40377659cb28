// Package kubeclient is the small HTTPS client the Kubernetes attestors use
// to call the API server and the kubelet: JSON of k8s.io/api types, a
// bearer token re-read from its file on every request (projected tokens
// rotate underneath a running process), and the server's certificate
// verified against a pinned CA bundle and nothing else.
//
// It is deliberately not client-go: the attestors make three kinds of
// request, and client-go would add a large dependency tree and its own
// caching, retry and credential-plugin behaviour to a security boundary.
package kubeclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/util/json"
)

// Defaults of Config.
const (
	DefaultTimeout          = 10 * time.Second
	DefaultMaxResponseBytes = 32 << 20
	// maxTokenBytes bounds the bearer token file; service-account tokens
	// are a few kilobytes.
	maxTokenBytes = 64 << 10
)

// Config configures a Client.
type Config struct {
	// URL is the base URL of the server, e.g. https://kubernetes.default.svc
	// or https://127.0.0.1:10250. Required; https unless AllowPlainHTTP.
	URL string
	// CAFile is a PEM bundle the server's certificate must chain to; no
	// other root is trusted. Required for https unless InsecureSkipVerify.
	CAFile string
	// ServerName is the name the server's certificate must carry; default
	// the host of URL.
	ServerName string
	// InsecureSkipVerify accepts any server certificate. Only for a kubelet
	// whose serving certificate is self-signed; never for the API server.
	InsecureSkipVerify bool
	// AllowPlainHTTP permits an http:// URL (the kubelet's read-only port).
	AllowPlainHTTP bool
	// TokenFile holds the bearer token sent with every request; it is read
	// again for each request. Empty sends no Authorization header.
	TokenFile string
	// Timeout bounds one request; default DefaultTimeout.
	Timeout time.Duration
	// MaxResponseBytes bounds a response body; default DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// DisableKeepAlives closes every connection after its request: right
	// for rare calls (node attestation), wrong for frequent ones.
	DisableKeepAlives bool
}

// Client calls one Kubernetes HTTPS endpoint. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	http      *http.Client
	transport *http.Transport
	tokenFile string
	maxBody   int64
}

// New checks cfg and loads the CA bundle.
func New(cfg Config) (*Client, error) {
	base, err := parseBase(cfg.URL, cfg.AllowPlainHTTP)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout < 0 || cfg.MaxResponseBytes < 0 {
		return nil, errors.New("Timeout and MaxResponseBytes must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		DisableKeepAlives:     cfg.DisableKeepAlives,
	}
	if base.Scheme == "https" {
		if tr.TLSClientConfig, err = tlsConfig(cfg, base); err != nil {
			return nil, err
		}
	}
	return &Client{
		base:      base,
		http:      &http.Client{Transport: tr, Timeout: cfg.Timeout, CheckRedirect: noRedirects},
		transport: tr,
		tokenFile: cfg.TokenFile,
		maxBody:   cfg.MaxResponseBytes,
	}, nil
}

func parseBase(raw string, allowHTTP bool) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("URL: must be set")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("URL: %w", err)
	}
	switch {
	case u.Scheme != "https" && !(u.Scheme == "http" && allowHTTP):
		return nil, fmt.Errorf("URL %q: scheme must be https", raw)
	case u.Host == "":
		return nil, fmt.Errorf("URL %q: has no host", raw)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("URL %q: must not carry user info, a query or a fragment", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

func tlsConfig(cfg Config, base *url.URL) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	if tc.ServerName == "" {
		tc.ServerName = base.Hostname()
	}
	if cfg.InsecureSkipVerify {
		tc.InsecureSkipVerify = true
		return tc, nil
	}
	if cfg.CAFile == "" {
		return nil, errors.New("CAFile: must be set to verify the server (or skip verification explicitly)")
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("CAFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CAFile %s: no PEM certificates", cfg.CAFile)
	}
	tc.RootCAs = pool
	return tc, nil
}

// A Kubernetes endpoint never redirects a client of these APIs; following
// one would send the bearer token elsewhere.
func noRedirects(*http.Request, []*http.Request) error {
	return errors.New("refusing to follow a redirect")
}

// Close releases idle connections.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// Get fetches path and decodes the answer into out, which must be of kind
// want (e.g. v1 Pod).
func (c *Client) Get(ctx context.Context, path string, want schema.GroupVersionKind, out runtime.Object) error {
	return c.do(ctx, http.MethodGet, path, nil, want, out)
}

// Post sends in as JSON to path and decodes the answer into out, which
// must be of kind want.
func (c *Client) Post(ctx context.Context, path string, in any, want schema.GroupVersionKind, out runtime.Object) error {
	body, err := kjson.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode request for %s: %w", path, err)
	}
	return c.do(ctx, http.MethodPost, path, body, want, out)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, want schema.GroupVersionKind, out runtime.Object) error {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, c.redacted(path), err)
	}
	defer resp.Body.Close()
	data, err := c.readBody(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, c.redacted(path), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return newAPIError(method, c.redacted(path), resp.StatusCode, data)
	}
	if err := decode(data, want, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, c.redacted(path), err)
	}
	return nil
}

func (c *Client) newRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("path %q must start with /", path)
	}
	u := *c.base
	u.Path += path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "nhid")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.tokenFile != "" {
		tok, err := readToken(c.tokenFile)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return req, nil
}

// redacted is the URL of path for messages: the base plus the path, which
// never holds a secret.
func (c *Client) redacted(path string) string { return c.base.String() + path }

func (c *Client) readBody(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, c.maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if int64(len(data)) > c.maxBody {
		return nil, fmt.Errorf("response is larger than %d bytes", c.maxBody)
	}
	return data, nil
}

// readToken reads a bearer token file. The token is checked to be one
// line of visible ASCII, so a corrupt file cannot inject header fields.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read token file %s: %w", path, err)
	}
	if len(data) > maxTokenBytes {
		return "", fmt.Errorf("token file %s is larger than %d bytes", path, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	for i := range len(tok) {
		if tok[i] <= ' ' || tok[i] > '~' {
			return "", fmt.Errorf("token file %s holds a character that cannot be in a bearer token", path)
		}
	}
	return tok, nil
}

// decode unmarshals data (case-sensitively, as the API server does) and
// checks its kind, so an answer of another shape is not half-read.
func decode(data []byte, want schema.GroupVersionKind, out runtime.Object) error {
	if err := kjson.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s: %w", want.Kind, err)
	}
	if got := out.GetObjectKind().GroupVersionKind(); got != want {
		return fmt.Errorf("answer is %q %q, want %q %q", got.GroupVersion(), got.Kind, want.GroupVersion(), want.Kind)
	}
	return nil
}
