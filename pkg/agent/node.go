package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agent/agentsvid"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// Timeouts and retry bounds of the node identity.
const (
	attestTimeout    = 60 * time.Second
	renewTimeout     = 30 * time.Second
	minRetry         = time.Second
	maxRetry         = time.Minute
	joinTokenAttesor = "join_token"
)

// ErrBanned is returned by Run when the server has banned the node.
var ErrBanned = errors.New("node banned")

// ErrEvicted is returned by Run when the server evicted the node and its
// node attestor cannot attest again.
var ErrEvicted = errors.New("node evicted")

// runNode keeps the node's identity: attest when there is no usable SVID,
// connect, renew at about half life, and handle eviction and bans. It
// returns nil when ctx ends and an error when the node cannot go on.
func (a *Agent) runNode(ctx context.Context) error {
	for {
		if !a.svidUsable() {
			if err := a.attest(ctx); err != nil || ctx.Err() != nil {
				return err
			}
		}
		if err := a.connect(); err != nil {
			return err
		}
		r, err := a.maintain(ctx)
		if errors.Is(err, ErrBanned) {
			a.forgetNode()
		}
		if err != nil || ctx.Err() != nil {
			return err
		}
		if err := a.evicted(r); err != nil {
			return err
		}
	}
}

func (a *Agent) svidUsable() bool {
	s := a.svidSrc.Get()
	return s != nil && a.clock.Now().Before(s.Certificates[0].NotAfter)
}

// attest attests the node, retrying while the server cannot be reached.
// A refusal is final: single-use evidence cannot be tried again.
func (a *Agent) attest(ctx context.Context) error {
	if a.cfg.NodeEvidence == nil {
		return errors.New("the agent must attest but has no node attestation evidence: " +
			"pass --join-token with a token from `nhidctl token generate`")
	}
	for failures := 1; ; failures++ {
		err := a.attestOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if final(err) {
			a.metrics.attestations.WithLabelValues("refused").Inc()
			if r := classify(err); r != nil && r.banned {
				return fmt.Errorf("%w: the server refuses to attest this node: %s", ErrBanned, r.reason)
			}
			return fmt.Errorf("node attestation with %s failed: %w", a.cfg.NodeEvidence.Type(), err)
		}
		a.metrics.attestations.WithLabelValues("error").Inc()
		wait := retryWait(failures)
		a.log.Warn("node attestation failed; retrying", "retry_in", wait.Round(time.Millisecond), telemetry.Error, err)
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

// final reports whether an attestation error will not go away by itself.
func final(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return true // our own checks of what the server sent
	}
	switch st.Code() {
	case codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated,
		codes.FailedPrecondition, codes.Unimplemented, codes.AlreadyExists:
		return true
	}
	return false
}

func (a *Agent) attestOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, attestTimeout)
	defer cancel()
	conn, peer, err := a.attestConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	res, err := agentsvid.Attest(ctx, agentv1.NewAgentServiceClient(conn), a.cfg.TrustDomain, a.cfg.NodeEvidence)
	if err != nil {
		return err
	}
	if peer != nil {
		if err := peer.verify(a.cfg.TrustDomain, res.Bundle); err != nil {
			return fmt.Errorf("insecure bootstrap: %w", err)
		}
	}
	a.metrics.attestations.WithLabelValues("success").Inc()
	a.log.Info("node attested", telemetry.SPIFFEID, res.SVID.ID.String(), telemetry.Selectors, res.Selectors,
		telemetry.ExpiresAt, res.SVID.Certificates[0].NotAfter)
	a.adoptSVID(res)
	return nil
}

// attestConn connects for an attestation: verifying the server against
// the bundle held, or, only while none is held and --insecure-bootstrap
// allows it, not verifying it but keeping its certificates for a check
// against the bundle it will send.
func (a *Agent) attestConn() (*grpc.ClientConn, *peerCerts, error) {
	if a.bundleSrc.Get() != nil {
		conn, err := dial(a.cfg.ServerAddress, a.cfg.TrustDomain, nil, a.bundleSrc, a.log)
		return conn, nil, err
	}
	if !a.cfg.InsecureBootstrap {
		return nil, nil, errors.New("no trust bundle to verify the server with: pass --trust-bundle FILE or --insecure-bootstrap")
	}
	a.log.Warn("attesting WITHOUT verifying the server (--insecure-bootstrap): " +
		"the bundle it returns will be trusted from now on")
	return insecureDial(a.cfg.ServerAddress, a.log)
}

// adoptSVID makes a new agent SVID (and its bundle) current and persists
// them. A failure to persist is logged: the SVID still works in memory,
// and the evidence that produced it may not be usable again.
func (a *Agent) adoptSVID(res *agentsvid.Result) {
	if res.Bundle != nil {
		a.applyBundle(res.Bundle, res.BundleProto)
	}
	a.svidSrc.Set(res.SVID)
	a.metrics.svidExpiry.Set(float64(res.SVID.Certificates[0].NotAfter.Unix()))
	if err := agentsvid.Save(a.cfg.DataDir, res.SVID); err != nil {
		a.log.Error("persisting the agent SVID failed; a restart will have to attest again", telemetry.Error, err)
	}
}

// connect replaces the server connection with one presenting the current
// SVID, and wakes the parts waiting for it.
func (a *Agent) connect() error {
	conn, err := dial(a.cfg.ServerAddress, a.cfg.TrustDomain, a.svidSrc, a.bundleSrc, a.log)
	if err != nil {
		return err
	}
	// Grant requests waiting for a human keep the old connection open.
	a.conn.retire(a.conn.swap(conn))
	a.connOnce.Do(func() { close(a.connected) })
	a.manager.RetryNow()
	a.sync.RetryNow()
	return nil
}

// maintain renews the SVID at about half its life until the server
// refuses the node. It returns the refusal of an evicted node, or an
// error for a banned one.
func (a *Agent) maintain(ctx context.Context) (*refusal, error) {
	failures := 0
	renewAt := renewTime(a.svidSrc.Get())
	for {
		timer := time.NewTimer(time.Until(renewAt))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, nil
		case r := <-a.conn.refusals:
			timer.Stop()
			if r.banned {
				return nil, fmt.Errorf("%w: %s", ErrBanned, r.reason)
			}
			return r, nil
		case <-a.renewNow:
		case <-timer.C:
		}
		timer.Stop()
		err := a.renew(ctx)
		if ctx.Err() != nil {
			return nil, nil
		}
		if r := classify(err); r != nil {
			if r.banned {
				return nil, fmt.Errorf("%w: %s", ErrBanned, r.reason)
			}
			return r, nil
		}
		if err == nil {
			failures = 0
			renewAt = renewTime(a.svidSrc.Get())
			if err := a.connect(); err != nil {
				return nil, err
			}
			continue
		}
		failures++
		if !a.svidUsable() {
			return &refusal{reason: "agent SVID expired before it could be renewed"}, nil
		}
		wait := retryWait(failures)
		a.log.Warn("renewing the agent SVID failed; retrying", "retry_in", wait.Round(time.Millisecond), telemetry.Error, err)
		renewAt = time.Now().Add(wait)
	}
}

func (a *Agent) renew(ctx context.Context) error {
	client, _ := a.conn.current()
	if client == nil {
		return errNotConnected
	}
	ctx, cancel := context.WithTimeout(ctx, renewTimeout)
	defer cancel()
	res, err := agentsvid.Renew(ctx, client, a.cfg.TrustDomain, a.svidSrc.Get().ID)
	if err != nil {
		a.metrics.renewals.WithLabelValues("error").Inc()
		return err
	}
	a.metrics.renewals.WithLabelValues("success").Inc()
	a.log.Info("agent SVID renewed", telemetry.SPIFFEID, res.SVID.ID.String(),
		telemetry.ExpiresAt, res.SVID.Certificates[0].NotAfter)
	a.adoptSVID(res)
	return nil
}

// evicted drops the unusable SVID and decides whether to attest again.
func (a *Agent) evicted(r *refusal) error {
	if old := a.conn.swap(nil); old != nil {
		_ = old.Close()
	}
	a.svidSrc.Set(nil)
	if err := agentsvid.Remove(a.cfg.DataDir); err != nil {
		a.log.Error("removing the unusable agent SVID failed", telemetry.Error, err)
	}
	if !canReattest(a.cfg.NodeEvidence) {
		a.forgetNode()
		a.log.Error("node evicted and its join token cannot be used again: generate a new token with "+
			"`nhidctl token generate` and restart the agent with --join-token", telemetry.Reason, r.reason)
		return fmt.Errorf("%w (%s): generate a new join token with `nhidctl token generate` and restart the agent with --join-token",
			ErrEvicted, r.reason)
	}
	a.log.Warn("node evicted; attesting again", telemetry.Reason, r.reason)
	return nil
}

// forgetNode empties the cache of a node the server no longer serves, so
// that a restart does not hand out the SVIDs minted for it while it has
// not synced under its new identity.
func (a *Agent) forgetNode() {
	if err := agentsvid.Remove(a.cfg.DataDir); err != nil {
		a.log.Error("removing the unusable agent SVID failed", telemetry.Error, err)
	}
	if err := a.cache.Reset(); err != nil {
		a.log.Error("emptying the agent cache failed", telemetry.Error, err)
	}
}

// canReattest reports whether the node attestor can produce fresh
// evidence. Attestors may say so with a CanReattest method; a join token
// never can, being single-use.
func canReattest(ev interface{ Type() string }) bool {
	if ev == nil {
		return false
	}
	if c, ok := ev.(interface{ CanReattest() bool }); ok {
		return c.CanReattest()
	}
	return ev.Type() != joinTokenAttesor
}

// renewTime is about half the SVID's life, jittered so that agents
// started together do not renew together.
func renewTime(s *x509svid.SVID) time.Time {
	leaf := s.Certificates[0]
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(time.Duration(float64(life) * (0.45 + 0.1*rand.Float64())))
}

// retryWait is exponential from minRetry to maxRetry with ±20% jitter.
func retryWait(failures int) time.Duration {
	d := minRetry
	for i := 1; i < failures && d < maxRetry; i++ {
		d *= 2
	}
	d = min(d, maxRetry)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleep waits for d or ctx, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
