package workloadapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestEveryMethod_WithoutSecurityHeaderIsInvalidArgument(t *testing.T) {
	ca := newTestCA(t, "example.org")
	mgr := newTestManager(t, ca)
	mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	att := &uidAttestor{}
	ts := startServer(t, serverOptions{manager: mgr, attestor: att})
	client := ts.rawClient(t)
	token, err := ca.mintJWT("spiffe://example.org/web", []string{"aud"}, "p", waitTimeout)
	if err != nil {
		t.Fatal(err)
	}

	headers := []struct {
		name string
		md   metadata.MD
	}{
		{"absent", nil},
		{"false", metadata.Pairs("workload.spiffe.io", "false")},
		{"wrong case", metadata.Pairs("workload.spiffe.io", "True")},
		{"repeated", metadata.Pairs("workload.spiffe.io", "true", "workload.spiffe.io", "true")},
		{"other key", metadata.Pairs("workload-spiffe-io", "true")},
	}
	for _, h := range headers {
		for _, m := range append(methodCalls(token), witCalls()...) {
			t.Run(h.name+"/"+m.name, func(t *testing.T) {
				ctx := testContext(t)
				if h.md != nil {
					ctx = metadata.NewOutgoingContext(ctx, h.md)
				}
				assertStatus(t, m.call(ctx, client), codes.InvalidArgument, "security header missing from request")
			})
		}
	}
	if got := att.calls.Load(); got != 0 {
		t.Errorf("attestor ran %d times for requests without the header", got)
	}
}

func TestWITProfile_IsUnimplemented(t *testing.T) {
	ca := newTestCA(t, "example.org")
	mgr := newTestManager(t, ca)
	mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	ts := startServer(t, serverOptions{manager: mgr, attestor: &uidAttestor{}})
	raw := ts.rawClient(t)
	for _, m := range witCalls() {
		t.Run(m.name, func(t *testing.T) {
			if code := status.Code(m.call(withHeader(testContext(t)), raw)); code != codes.Unimplemented {
				t.Fatalf("code = %v, want Unimplemented", code)
			}
		})
	}
	t.Run("go-spiffe FetchWITSVID", func(t *testing.T) {
		_, err := ts.client(t).FetchWITSVID(context.Background(), "")
		if code := status.Code(err); code != codes.Unimplemented {
			t.Fatalf("FetchWITSVID: %v, want Unimplemented", err)
		}
	})
}
