package grants

import (
	"testing"
)

// BenchmarkRequest measures the agent's own share of a grant request: the
// caller's peer credentials and attestation (a stub attestor), the
// identity lookup, validation, and relaying the decision of an upstream
// that answers at once, over real Unix-socket gRPC on both sides.
//
//	go test -run '^$' -bench Request ./pkg/agent/grants/
func BenchmarkRequest(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	h.up.onRequest(script(granted("g1")))
	ctx := workloadCtx(b)
	req := validRequest()
	req.AuthorizationDetails = `[{"type":"deployment","locations":["staging"]}]`
	for b.Loop() {
		if err := requestErr(ctx, h.client, req); err != nil {
			b.Fatal(err)
		}
	}
}
