// Command probe is the end-to-end tests' workload: a plain go-spiffe client
// run as its own process, so the agent attests a real, separate binary. It
// prints one JSON object per result on stdout and, on failure, the gRPC code
// and message on stderr with exit status 3 (PermissionDenied) or 1.
//
//	probe x509                 fetch the X.509 context once
//	probe watch                print every X.509 context update until killed
//	probe jwt AUDIENCE         fetch a JWT-SVID and validate it back
//	probe validate AUDIENCE TOKEN   validate someone else's JWT-SVID
//	probe serve ADDR           accept mTLS connections (SPIFFE authenticated) and
//	                           answer each with the client's SPIFFE ID
//	probe dial ADDR SERVER_ID  connect over mTLS to a server of that SPIFFE ID
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// result is what one fetch printed.
type result struct {
	SPIFFEIDs []string `json:"spiffe_ids"`
	Serials   []string `json:"serials,omitempty"`
	NotAfter  []string `json:"not_after,omitempty"`
	Token     string   `json:"token,omitempty"`
	Subject   string   `json:"subject,omitempty"`
	// TrustDomains are those of the bundles received (x509), sorted.
	TrustDomains []string `json:"trust_domains,omitempty"`
	// Peer is the SPIFFE ID at the other end of an mTLS connection.
	Peer string    `json:"peer,omitempty"`
	Time time.Time `json:"time"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fail(errors.New("usage: probe x509|watch|jwt AUDIENCE"))
	}
	var err error
	switch os.Args[1] {
	case "x509":
		err = fetchX509(ctx)
	case "watch":
		err = watch(ctx)
	case "jwt":
		if len(os.Args) < 3 {
			fail(errors.New("probe jwt needs an audience"))
		}
		err = fetchJWT(ctx, os.Args[2])
	case "validate":
		if len(os.Args) < 4 {
			fail(errors.New("probe validate needs an audience and a token"))
		}
		err = validate(ctx, os.Args[2], os.Args[3])
	case "serve":
		if len(os.Args) < 3 {
			fail(errors.New("probe serve needs an address"))
		}
		err = serve(ctx, os.Args[2])
	case "dial":
		if len(os.Args) < 4 {
			fail(errors.New("probe dial needs an address and the server's SPIFFE ID"))
		}
		err = dial(ctx, os.Args[2], os.Args[3])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil && ctx.Err() == nil {
		fail(err)
	}
}

func fetchX509(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	x, err := workloadapi.FetchX509Context(ctx)
	if err != nil {
		return err
	}
	r := describe(x.SVIDs)
	for _, b := range x.Bundles.Bundles() {
		r.TrustDomains = append(r.TrustDomains, b.TrustDomain().Name())
	}
	slices.Sort(r.TrustDomains)
	return emit(r)
}

func watch(ctx context.Context) error {
	return workloadapi.WatchX509Context(ctx, watcher{})
}

type watcher struct{}

func (watcher) OnX509ContextUpdate(x *workloadapi.X509Context) { _ = emit(describe(x.SVIDs)) }

func (watcher) OnX509ContextWatchError(err error) {
	if status.Code(err) != codes.Canceled {
		fmt.Fprintf(os.Stderr, "watch error: %s: %s\n", status.Code(err), status.Convert(err).Message())
	}
	// A PermissionDenied after an update means every identity was withdrawn.
	if status.Code(err) == codes.PermissionDenied {
		_ = emit(result{SPIFFEIDs: []string{}, Time: time.Now()})
	}
}

func fetchJWT(ctx context.Context, audience string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
	if err != nil {
		return err
	}
	validated, err := client.ValidateJWTSVID(ctx, svid.Marshal(), audience)
	if err != nil {
		return fmt.Errorf("validate the fetched JWT-SVID: %w", err)
	}
	return emit(result{SPIFFEIDs: []string{svid.ID.String()}, Token: svid.Marshal(), Subject: validated.ID.String(), Time: time.Now()})
}

func describe(svids []*x509svid.SVID) result {
	r := result{SPIFFEIDs: []string{}, Time: time.Now()}
	for _, s := range svids {
		r.SPIFFEIDs = append(r.SPIFFEIDs, s.ID.String())
		r.Serials = append(r.Serials, s.Certificates[0].SerialNumber.Text(16))
		r.NotAfter = append(r.NotAfter, s.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
	}
	return r
}

func emit(r result) error {
	return json.NewEncoder(os.Stdout).Encode(r)
}

func fail(err error) {
	code := status.Code(err)
	fmt.Fprintf(os.Stderr, "%s: %s\n", code, status.Convert(err).Message())
	if code == codes.PermissionDenied {
		os.Exit(3)
	}
	os.Exit(1)
}
