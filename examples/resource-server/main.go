// Command resource-server is an example relying party of nhid's grants: a
// small HTTPS service that serves a route only to a workload holding a
// grant for it.
//
// Every connection is mutually authenticated with X.509-SVIDs, its own
// fetched from nhid-agent (SPIFFE_ENDPOINT_SOCKET). A request must carry a
// Transaction Token in the Txn-Token header, which is checked offline and
// then online:
//
//   - signature, against the trust domain's JWKS (GET /jwks on nhid-server's
//     relying-party endpoint, fetched over mTLS with this service's SVID);
//   - header typ "txntoken+jwt"; aud the trust domain; exp in the future;
//     sub the SPIFFE ID of the caller on this connection (a token is only
//     good for the workload it was issued to);
//   - scope holding the route's scope;
//   - RFC 7662 introspection (POST /introspect), so that a revoked or
//     released grant is refused at once rather than when its token expires.
//
// It needs nothing of nhid but go-spiffe and a JOSE library: any relying
// party can do the same.
//
//	resource-server --listen 127.0.0.1:9443 --nhid-server 127.0.0.1:8443 \
//	    --route /deploy=deploy:staging --route /logs=logs:read
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// options are the service's flags.
type options struct {
	listen   string
	nhid     string
	nhidID   string
	audience string
	routes   map[string]string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "resource-server:", err)
		os.Exit(2)
	}
	if err := run(ctx, o, log); err != nil {
		log.Error("resource-server failed", "error", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	o := options{routes: make(map[string]string)}
	fs := flag.NewFlagSet("resource-server", flag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9443", "HTTPS address to serve")
	fs.StringVar(&o.nhid, "nhid-server", "127.0.0.1:8443", "nhid-server's relying-party endpoint, HOST:PORT")
	fs.StringVar(&o.nhidID, "nhid-server-id", "", "SPIFFE ID nhid-server presents (default spiffe://<trust domain>/nhid/server)")
	fs.StringVar(&o.audience, "audience", "", "aud every Txn-Token must carry (default the trust domain, spiffe://<trust domain>)")
	fs.Func("route", "PATH=SCOPE: serve PATH to holders of SCOPE (repeatable)", func(s string) error {
		path, scope, ok := strings.Cut(s, "=")
		if !ok || !strings.HasPrefix(path, "/") || scope == "" || strings.ContainsAny(scope, " \"\\") {
			return fmt.Errorf("%q is not PATH=SCOPE", s)
		}
		o.routes[path] = scope
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if len(o.routes) == 0 {
		return o, errors.New("--route: at least one is required")
	}
	return o, nil
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	if os.Getenv("SPIFFE_ENDPOINT_SOCKET") == "" {
		return errors.New("SPIFFE_ENDPOINT_SOCKET is not set: point it at nhid-agent")
	}
	src, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return fmt.Errorf("fetch X.509-SVID: %w", err)
	}
	defer src.Close()
	self, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	td := self.ID.TrustDomain()
	nhidID, err := defaultID(o.nhidID, td, "/nhid/server")
	if err != nil {
		return fmt.Errorf("--nhid-server-id: %w", err)
	}
	if o.audience == "" {
		o.audience = td.ID().String()
	}
	verifier := newVerifier(newNHIDClient(o.nhid, nhidID, src), o.audience)
	srv := &http.Server{
		Handler:           newHandler(o.routes, verifier, log),
		TLSConfig:         tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeMemberOf(td)),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	log.Info("resource-server serving", "address", lis.Addr().String(), "spiffe_id", self.ID.String(), "routes", len(o.routes))
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(lis, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func defaultID(flagValue string, td spiffeid.TrustDomain, path string) (spiffeid.ID, error) {
	if flagValue != "" {
		return spiffeid.FromString(flagValue)
	}
	return spiffeid.FromPath(td, path)
}
