package agent

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// reattestAnswerTimeout bounds answering one continuous attestation
// challenge (for TPM: a quote).
const reattestAnswerTimeout = 60 * time.Second

// runReattest keeps the Reattest stream open while the node attestor can
// attest again, answering the server's continuous attestation challenges
// with it (for TPM: quotes of the PCRs over the server's nonce). The
// stream moves to each new connection; it ends for good when the server
// has nothing to ask this node's attestor.
func (a *Agent) runReattest(ctx context.Context) {
	ev := a.cfg.NodeEvidence
	if ev == nil || !canReattest(ev) {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-a.connected:
	}
	for failures := 0; ; {
		answered, err := a.reattestStream(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil && answered == 0 {
			a.log.Debug("the server does not attest this node continuously", telemetry.Attestor, ev.Type())
			return
		}
		if answered > 0 {
			failures = 0
		}
		failures++
		wait := retryWait(failures)
		a.log.Debug("continuous attestation stream ended; reopening", "retry_in", wait.Round(time.Millisecond), telemetry.Error, err)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// reattestStream serves one Reattest stream until it ends and returns how
// many challenges it answered. A clean end (the server's OK) is a nil
// error.
func (a *Agent) reattestStream(ctx context.Context) (answered int, err error) {
	client, gen := a.conn.current()
	if client == nil {
		return 0, errNotConnected
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Reattest(ctx)
	if err != nil {
		a.conn.observe(gen, err)
		return 0, err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return answered, nil
		}
		if err != nil {
			a.conn.observe(gen, err)
			return answered, err
		}
		if err := stream.Send(a.answerChallenge(ctx, msg)); err != nil {
			return answered, err
		}
		answered++
	}
}

// answerChallenge answers one challenge with the node attestor; a failure
// is reported to the server, which logs it and asks again later.
func (a *Agent) answerChallenge(ctx context.Context, msg *agentv1.ReattestResponse) *agentv1.ReattestRequest {
	ctx, cancel := context.WithTimeout(ctx, reattestAnswerTimeout)
	defer cancel()
	started := time.Now()
	resp, err := a.cfg.NodeEvidence.Respond(ctx, msg.GetChallenge())
	if err != nil {
		a.log.Warn("answering a continuous attestation challenge failed", telemetry.Error, err)
		return &agentv1.ReattestRequest{ChallengeId: msg.GetChallengeId(), Error: err.Error()}
	}
	a.log.Debug("answered a continuous attestation challenge", telemetry.Duration, time.Since(started))
	return &agentv1.ReattestRequest{ChallengeId: msg.GetChallengeId(), Response: resp}
}
