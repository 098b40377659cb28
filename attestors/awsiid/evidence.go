package awsiid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults of the agent half.
const (
	// DefaultMetadataEndpoint is EC2's instance metadata service.
	DefaultMetadataEndpoint = "http://169.254.169.254"
	// DefaultTimeout bounds one attestation's requests to IMDS, which
	// answers in milliseconds on an instance.
	DefaultTimeout = 5 * time.Second
)

// The IMDSv2 protocol.
const (
	tokenPath     = "/latest/api/token"
	documentPath  = "/latest/dynamic/instance-identity/document"
	signaturePath = "/latest/dynamic/instance-identity/signature"
	// TokenTTLHeader asks for (on PUT) and reports (in the answer) a
	// session token's lifetime in seconds.
	TokenTTLHeader = "X-aws-ec2-metadata-token-ttl-seconds"
	// TokenHeader carries the session token on GET requests.
	TokenHeader = "X-aws-ec2-metadata-token"
	// tokenTTL is as short as IMDS allows: the token is used for two
	// requests right away.
	tokenTTL = "60"
	maxToken = 1 << 10
	// maxSignatureText is the base64 of a maxSignature signature with
	// line breaks.
	maxSignatureText = 2 << 10
)

// EvidenceConfig configures the agent half.
type EvidenceConfig struct {
	// MetadataEndpoint is the instance metadata service's base URL;
	// default DefaultMetadataEndpoint. Set it for an IMDS proxy or tests.
	MetadataEndpoint string
	// Timeout bounds all the requests of one attestation; default
	// DefaultTimeout.
	Timeout time.Duration
}

// Evidence is the agent half: it reads the instance identity document and
// its signature from IMDS (version 2, with a session token) at each
// attestation. It implements attestor.NodeEvidence.
type Evidence struct {
	endpoint string
	timeout  time.Duration
	client   *http.Client
}

// CheckMetadataEndpoint reports whether s can be an IMDS base URL: http or
// https, a host, and no credentials, query or fragment.
func CheckMetadataEndpoint(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		// url.Parse's error repeats s, which may hold a password.
		return errors.New("metadata endpoint: not a URL")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return fmt.Errorf("metadata endpoint %q: must be an http:// or https:// URL with a host", u.Redacted())
	case u.User != nil, u.RawQuery != "", u.Fragment != "":
		return fmt.Errorf("metadata endpoint %q: must not hold credentials, a query or a fragment", u.Redacted())
	}
	return nil
}

// NewEvidence checks cfg. IMDS is not contacted until evidence is needed.
func NewEvidence(cfg EvidenceConfig) (*Evidence, error) {
	if cfg.MetadataEndpoint == "" {
		cfg.MetadataEndpoint = DefaultMetadataEndpoint
	}
	if err := CheckMetadataEndpoint(cfg.MetadataEndpoint); err != nil {
		return nil, fmt.Errorf("aws_iid evidence: MetadataEndpoint: %w", err)
	}
	switch {
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("aws_iid evidence: Timeout: %v is negative", cfg.Timeout)
	}
	transport := &http.Transport{
		// IMDS is link-local: a proxy from the environment would ask
		// some other host for this instance's identity.
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
		// Three requests per attestation, rarely: idle connections are
		// not worth keeping.
		DisableKeepAlives: true,
	}
	return &Evidence{
		endpoint: strings.TrimSuffix(cfg.MetadataEndpoint, "/"),
		timeout:  cfg.Timeout,
		client: &http.Client{
			Transport: transport,
			// IMDS does not redirect; following one could leave the instance.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Type returns "aws_iid".
func (e *Evidence) Type() string { return Type }

// CanReattest reports true: the document can be read again after an
// eviction (and the server then admits it once more).
func (e *Evidence) CanReattest() bool { return true }

// Evidence fetches a session token, then the document and its signature.
func (e *Evidence) Evidence(ctx context.Context) ([]byte, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	p, err := e.fetch(ctx)
	if err != nil {
		if parent.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer from IMDS at %s within %s: not on EC2, IMDS unreachable, or (in a container) "+
				"the instance's metadata PUT response hop limit is too low: %w", e.endpoint, e.timeout, err)
		}
		return nil, fmt.Errorf("aws_iid evidence: %w", err)
	}
	return encodePayload(p)
}

func (e *Evidence) fetch(ctx context.Context) (payload, error) {
	token, err := e.do(ctx, http.MethodPut, tokenPath, TokenTTLHeader, tokenTTL, maxToken)
	if err != nil {
		return payload{}, err
	}
	tok := strings.TrimSpace(string(token))
	if tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return payload{}, errors.New("IMDS answered an unusable session token")
	}
	doc, err := e.do(ctx, http.MethodGet, documentPath, TokenHeader, tok, maxDocument)
	if err != nil {
		return payload{}, err
	}
	if !json.Valid(doc) {
		return payload{}, errors.New("IMDS served an instance identity document that is not JSON")
	}
	text, err := e.do(ctx, http.MethodGet, signaturePath, TokenHeader, tok, maxSignatureText)
	if err != nil {
		return payload{}, err
	}
	sig, err := decodeSignature(text)
	if err != nil {
		return payload{}, fmt.Errorf("IMDS signature: %w", err)
	}
	return payload{Document: doc, Signature: sig}, nil
}

// do sends one request with one header and returns the body of a 200
// answer of at most limit bytes.
func (e *Evidence) do(ctx context.Context, method, path, header, value string, limit int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.endpoint+path, nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set(header, value)
	resp, err := e.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		}
		return nil, fmt.Errorf("not on EC2 or IMDS unreachable at %s: %w", e.endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: IMDS answered %s%s", method, path, resp.Status, statusHint(method, resp.StatusCode))
	}
	if len(body) > limit {
		return nil, fmt.Errorf("%s %s: answer is longer than %d bytes", method, path, limit)
	}
	return body, nil
}

// statusHint says what an IMDS refusal usually means.
func statusHint(method string, code int) string {
	switch {
	case method == http.MethodPut && code == http.StatusForbidden:
		return " (IMDS refuses session tokens: is the metadata service disabled on this instance?)"
	case method == http.MethodPut && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed):
		return " (this metadata service does not speak IMDSv2)"
	case code == http.StatusUnauthorized:
		return " (IMDS rejected the session token)"
	case code == http.StatusNotFound:
		return " (no instance identity document here: not an EC2 instance?)"
	}
	return ""
}

// Respond always fails: the document is checked in one step.
func (e *Evidence) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("aws_iid attestation has no challenge; refusing to answer one")
}
