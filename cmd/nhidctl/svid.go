package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/svid"
)

// defaultWorkloadSocket is where nhid-agent serves the Workload API.
const defaultWorkloadSocket = "unix:///run/nhid/agent.sock"

func newSVIDCmd(g *globals) *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "svid",
		Short: "Act as a workload: fetch and check SVIDs from nhid-agent's Workload API",
	}
	// Shadows the admin --socket: these commands talk to the agent.
	cmd.PersistentFlags().StringVar(&socket, "socket", "",
		"Workload API socket (default $SPIFFE_ENDPOINT_SOCKET, else "+defaultWorkloadSocket+")")
	cmd.AddCommand(newSVIDFetchCmd(&socket), newSVIDValidateJWTCmd(g, &socket), newSVIDShowCmd(g, &socket))
	return cmd
}

// workloadAddr resolves the Workload API address; a bare path is taken as
// a Unix socket.
func workloadAddr(flag string) (string, error) {
	addr := flag
	if addr == "" {
		addr = os.Getenv(workloadapi.SocketEnv)
	}
	if addr == "" {
		addr = defaultWorkloadSocket
	}
	if strings.HasPrefix(addr, "/") {
		addr = "unix://" + addr
	}
	if err := workloadapi.ValidateAddress(addr); err != nil {
		return "", usagef("Workload API socket %q: %v", addr, err)
	}
	if u, err := url.Parse(addr); err == nil && u.Scheme == "unix" {
		if _, err := os.Stat(u.Path); err != nil {
			return "", workloadUnreachable(addr)
		}
	}
	return addr, nil
}

func workloadUnreachable(addr string) error {
	return fmt.Errorf("cannot reach the Workload API at %s: is nhid-agent running? set --socket or %s", addr, workloadapi.SocketEnv)
}

// explainWorkload turns a Workload API error into one a person can act on.
func explainWorkload(addr string, err error) error {
	st, ok := grpcStatus(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return workloadUnreachable(addr)
	case codes.PermissionDenied:
		return fmt.Errorf("no identity for this process (uid %d): %s; check that an entry's selectors match it", os.Getuid(), st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("the Workload API at %s did not answer within %v", addr, callTimeout)
	}
	return errors.New(st.Message())
}

func newSVIDFetchCmd(socket *string) *cobra.Command {
	var output, dir string
	cmd := &cobra.Command{
		Use:         "fetch [--socket WORKLOAD_SOCKET] [-o table|json|pem] [--write DIR]",
		Short:       "Fetch this process's X.509-SVIDs and bundles as a workload would",
		Args:        exactArgs(),
		Annotations: map[string]string{annotationOutputs: "table,json,pem"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr, err := workloadAddr(*socket)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
			defer cancel()
			x509ctx, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
			if err != nil {
				return explainWorkload(addr, err)
			}
			if len(x509ctx.SVIDs) == 0 {
				return errors.New("the Workload API answered with no SVIDs")
			}
			if dir != "" {
				if err := writeSVIDs(cmd.ErrOrStderr(), dir, x509ctx); err != nil {
					return err
				}
			}
			return printX509Context(cmd.OutOrStdout(), output, x509ctx)
		},
	}
	// Shadows the global -o: this command also prints PEM.
	cmd.Flags().StringVarP(&output, "output", "o", formatTable, "output format: table, json or pem (certificates only, never keys)")
	cmd.Flags().StringVar(&dir, "write", "", "write svid.pem, svid.key (0600) and bundle.pem to DIR")
	return cmd
}

func printX509Context(w io.Writer, format string, c *workloadapi.X509Context) error {
	switch format {
	case formatJSON:
		return printFetchJSON(w, c)
	case formatPEM:
		for _, s := range c.SVIDs {
			if err := writePEMCerts(w, s.Certificates); err != nil {
				return err
			}
		}
		if b, ok := bundleFor(c, c.SVIDs[0]); ok {
			return writePEMCerts(w, b.X509Authorities())
		}
		return nil
	}
	p := &printer{w: w, format: formatTable}
	for i, s := range c.SVIDs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		leaf := s.Certificates[0]
		bundle := "none for " + s.ID.TrustDomain().Name()
		if b, ok := bundleFor(c, s); ok {
			bundle = fmt.Sprintf("%s, %d X.509 authorities", s.ID.TrustDomain().Name(), len(b.X509Authorities()))
		}
		purpose := purposeOf(leaf)
		if err := p.record([]field{
			{"SPIFFE ID", s.ID.String()},
			{"Hint", s.Hint},
			{"Entry", purpose.EntryID},
			{"Purpose", purpose.Purpose},
			{"Owner", purpose.Owner},
			{"Expires", fmt.Sprintf("%s (in %s)", leaf.NotAfter.UTC().Format(time.RFC3339), time.Until(leaf.NotAfter).Round(time.Second))},
			{"Serial", leaf.SerialNumber.Text(16)},
			{"Bundle", bundle},
		}); err != nil {
			return err
		}
	}
	return nil
}

func bundleFor(c *workloadapi.X509Context, s *x509svid.SVID) (*x509bundle.Bundle, bool) {
	if c.Bundles == nil {
		return nil, false
	}
	b, err := c.Bundles.GetX509BundleForTrustDomain(s.ID.TrustDomain())
	return b, err == nil
}

// fetchJSON is "svid fetch -o json". Private keys are never printed.
type fetchJSON struct {
	SVIDs   []svidJSON   `json:"svids"`
	Bundles []bundleJSON `json:"bundles"`
}

type svidJSON struct {
	SpiffeID     string `json:"spiffe_id"`
	Hint         string `json:"hint"`
	ExpiresAt    string `json:"expires_at"`
	Serial       string `json:"serial"`
	EntryID      string `json:"entry_id"`
	Purpose      string `json:"purpose"`
	Owner        string `json:"owner"`
	Certificates string `json:"certificates_pem"`
}

// purposeOf reads the purpose attribute nhid writes into X.509-SVIDs;
// SVIDs from other issuers have none, and a malformed one is shown as such.
func purposeOf(leaf *x509.Certificate) svid.Purpose {
	p, _, err := svid.PurposeFromCertificate(leaf)
	if err != nil {
		return svid.Purpose{Purpose: "(unreadable: " + err.Error() + ")"}
	}
	return p
}

type bundleJSON struct {
	TrustDomain     string `json:"trust_domain"`
	X509Authorities string `json:"x509_authorities_pem"`
}

func printFetchJSON(w io.Writer, c *workloadapi.X509Context) error {
	out := fetchJSON{SVIDs: []svidJSON{}, Bundles: []bundleJSON{}}
	for _, s := range c.SVIDs {
		leaf := s.Certificates[0]
		purpose := purposeOf(leaf)
		out.SVIDs = append(out.SVIDs, svidJSON{
			SpiffeID:     s.ID.String(),
			Hint:         s.Hint,
			ExpiresAt:    leaf.NotAfter.UTC().Format(time.RFC3339),
			Serial:       leaf.SerialNumber.Text(16),
			EntryID:      purpose.EntryID,
			Purpose:      purpose.Purpose,
			Owner:        purpose.Owner,
			Certificates: pemCerts(s.Certificates),
		})
	}
	if c.Bundles != nil {
		bundles := c.Bundles.Bundles()
		slices.SortFunc(bundles, func(a, b *x509bundle.Bundle) int {
			return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
		})
		for _, b := range bundles {
			out.Bundles = append(out.Bundles, bundleJSON{TrustDomain: b.TrustDomain().Name(), X509Authorities: pemCerts(b.X509Authorities())})
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func pemCerts(certs []*x509.Certificate) string {
	var b strings.Builder
	_ = writePEMCerts(&b, certs) // a strings.Builder does not fail
	return b.String()
}

func writePEMCerts(w io.Writer, certs []*x509.Certificate) error {
	for _, c := range certs {
		if err := pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
			return fmt.Errorf("write PEM: %w", err)
		}
	}
	return nil
}
