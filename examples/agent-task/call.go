package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// TxnTokenHeader carries the Transaction Token to the resource server
// (draft-ietf-oauth-transaction-tokens).
const TxnTokenHeader = "Txn-Token"

// callTimeout bounds one call to the resource server.
const callTimeout = 10 * time.Second

// maxResponseBytes bounds what is read of an answer.
const maxResponseBytes = 1 << 20

// callResult is one answer of the resource server.
type callResult struct {
	N      int             `json:"n"`
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body,omitempty"`
	Text   string          `json:"text,omitempty"`
}

// callResource calls o.url o.repeat times with the token and returns the
// exit status: exitRefused if any call was refused.
func callResource(ctx context.Context, o options, id *identity, token string, out *printer) int {
	client, err := mtlsClient(id, o.serverID)
	if err != nil {
		out.fail("resource server", err)
		return exitFailed
	}
	defer client.CloseIdleConnections()
	stdin := bufio.NewScanner(os.Stdin)
	status := exitOK
	for n := 1; n <= o.repeat; n++ {
		if n > 1 && o.step && !stdin.Scan() {
			break // stdin closed: no more calls
		}
		res, err := call(ctx, client, o.url, token, n)
		if err != nil {
			out.fail("call resource server", err)
			return exitFailed
		}
		out.call(res)
		if res.Status < 200 || res.Status > 299 {
			status = exitRefused
		}
	}
	return status
}

// mtlsClient presents the task's X.509-SVID and accepts the resource
// server's: the SPIFFE ID serverID, or any of the trust domain.
func mtlsClient(id *identity, serverID string) (*http.Client, error) {
	authz := tlsconfig.AuthorizeMemberOf(id.svid.ID.TrustDomain())
	if serverID != "" {
		sid, err := spiffeid.FromString(serverID)
		if err != nil {
			return nil, fmt.Errorf("--server-id: %w", err)
		}
		authz = tlsconfig.AuthorizeID(sid)
	}
	conf := tlsconfig.MTLSClientConfig(id.source, id.source, authz)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: conf}, Timeout: callTimeout}, nil
}

func call(ctx context.Context, client *http.Client, url, token string, n int) (callResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return callResult{}, err
	}
	req.Header.Set(TxnTokenHeader, token)
	resp, err := client.Do(req)
	if err != nil {
		return callResult{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return callResult{}, fmt.Errorf("read answer: %w", err)
	}
	res := callResult{N: n, Status: resp.StatusCode}
	if json.Valid(body) {
		res.Body = body
	} else {
		res.Text = string(body)
	}
	return res, nil
}
