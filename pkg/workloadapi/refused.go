package workloadapi

import (
	"errors"

	"google.golang.org/grpc"
)

// Refusal is a request refused after its caller was attested: the caller
// was entitled to no identity, or not to the one it named. A caller whose
// attestation failed is not a refusal here; the Attestor saw that failure.
type Refusal struct {
	// Method is the gRPC method called, in full
	// ("/SpiffeWorkloadAPI/FetchJWTSVID").
	Method string
	// PID, UID and GID are the caller's, from the kernel.
	PID      int32
	UID, GID uint32
	// SPIFFEID is the identity the caller asked for, if it named one.
	SPIFFEID string
	// Selectors are what the attestors found for the caller.
	Selectors []string
}

// reportRefusal tells Config.OnRefused of the call's refusal, if err is
// one and the caller did not leave first.
func (c *call) reportRefusal(err error) {
	if c.h.onRefused == nil || c.proc == nil || c.ctx.Err() != nil || !errors.Is(err, errNoIdentity) {
		return
	}
	method := c.method
	if m, ok := grpc.Method(c.ctx); ok {
		method = m
	}
	c.h.onRefused(Refusal{
		Method: method, PID: c.proc.PID(), UID: c.proc.UID(), GID: c.proc.GID(),
		SPIFFEID: c.wantID, Selectors: c.sels.Strings(),
	})
}
