// Command probe is the end-to-end tests' workload: a plain go-spiffe client
// run as its own process, so the agent attests a real, separate binary. It
// prints one JSON object per result on stdout and, on failure, the gRPC code
// and message on stderr with exit status 3 (PermissionDenied) or 1.
//
//	probe x509                 fetch the X.509 context once
//	probe watch                print every X.509 context update until killed
//	probe jwt AUDIENCE         fetch a JWT-SVID and validate it back
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
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
	SPIFFEIDs []string  `json:"spiffe_ids"`
	Serials   []string  `json:"serials,omitempty"`
	NotAfter  []string  `json:"not_after,omitempty"`
	Token     string    `json:"token,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Time      time.Time `json:"time"`
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
	return emit(describe(x.SVIDs))
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
