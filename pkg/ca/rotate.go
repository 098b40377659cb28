package ca

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nhid/nhid/pkg/telemetry"
)

// retryDelay is how soon Run retries a failed rotation step.
const retryDelay = 10 * time.Second

// Rotate takes every rotation step due at the clock's now, in an order that
// keeps each intermediate state safe to crash in:
//
//  1. prepare: create the next X.509 CA / JWT key where due (key file
//     first, then the state that names it);
//  2. publish: add every live authority of this CA to the bundle and
//     remove its expired ones;
//  3. advance: activate a next key that is due (only after step 2
//     succeeded, so no SVID is signed by an unpublished key), retire the
//     old one and delete its private key, forget expired keys.
//
// Each step persists before it returns, so calling Rotate again after an
// error resumes where it stopped. X.509 and JWT keys are independent: a
// broken upstream CA does not hold up the JWT key's rotation.
func (c *CA) Rotate(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	prepErr := c.prepare(now)
	if err := c.publish(ctx, now); err != nil {
		return errors.Join(prepErr, err)
	}
	return errors.Join(prepErr, c.advance(now))
}

// prepare creates the next slot of each kind when due: when none is
// active, or the active one has reached half its life.
func (c *CA) prepare(now time.Time) error {
	st := c.state.clone()
	var obsolete []string
	obsolete = append(obsolete, retireExpired(st.x509, now)...)
	obsolete = append(obsolete, retireExpired(st.jwt, now)...)
	var created []string
	var events []func()
	var errs []error
	if needNext(st.x509, now) {
		if s, anchors, err := c.newX509Slot(now); err != nil {
			errs = append(errs, fmt.Errorf("prepare X.509 CA: %w", err))
		} else {
			created = append(created, s.keyFile)
			st.x509 = append(st.x509, s)
			for _, a := range anchors {
				if !hasAnchor(st.anchors, a) {
					st.anchors = append(st.anchors, a)
				}
			}
			events = append(events, c.event(kindX509, stepPrepare, &s))
		}
	}
	if needNext(st.jwt, now) {
		if s, err := c.newJWTSlot(now); err != nil {
			errs = append(errs, fmt.Errorf("prepare JWT key: %w", err))
		} else {
			created = append(created, s.keyFile)
			st.jwt = append(st.jwt, s)
			events = append(events, c.event(kindJWT, stepPrepare, &s))
		}
	}
	if len(created) == 0 && len(obsolete) == 0 {
		return errors.Join(errs...)
	}
	if err := c.commit(st, obsolete); err != nil {
		c.discardKeys(created)
		return errors.Join(append(errs, err)...)
	}
	for _, e := range events {
		e()
	}
	return errors.Join(errs...)
}

// advance activates due next slots and forgets expired ones. It runs only
// after publish succeeded.
func (c *CA) advance(now time.Time) error {
	st := c.state.clone()
	var o1, o2 []string
	var e1, e2 []func()
	st.x509, o1, e1 = c.advanceSlots(kindX509, st.x509, now)
	st.jwt, o2, e2 = c.advanceSlots(kindJWT, st.jwt, now)
	obsolete, events := append(o1, o2...), append(e1, e2...)
	anchors := st.anchors[:0:0]
	for _, a := range st.anchors {
		if now.Before(a.NotAfter) {
			anchors = append(anchors, a)
		}
	}
	if len(events) == 0 && len(anchors) == len(st.anchors) {
		return nil
	}
	st.anchors = anchors
	if err := c.commit(st, obsolete); err != nil {
		return err
	}
	for _, e := range events {
		e()
	}
	return nil
}

// advanceSlots activates the next slot of one kind when due and drops the
// expired ones; it returns the remaining slots, the key files no longer
// needed, and the events to report once committed. slots is a copy.
func (c *CA) advanceSlots(kind string, slots []slot, now time.Time) ([]slot, []string, []func()) {
	var obsolete []string
	var events []func()
	next, active := find(slots, statusNext), find(slots, statusActive)
	if next != nil && (active == nil || !now.Before(activateAt(active, next))) {
		if active != nil {
			obsolete = append(obsolete, retire(active))
		}
		next.status = statusActive
		events = append(events, c.event(kind, stepActivate, next))
	}
	kept := slots[:0:0]
	for i := range slots {
		s := &slots[i]
		if s.live(now) {
			kept = append(kept, *s)
			continue
		}
		obsolete = append(obsolete, retire(s))
		events = append(events, c.event(kind, stepRemove, s))
	}
	return kept, obsolete, events
}

// commit persists st, makes it current, deletes the key files it no longer
// names and publishes the new signing view.
func (c *CA) commit(st state, obsolete []string) error {
	if err := c.files.save(st); err != nil {
		return err
	}
	c.state = st
	c.setView()
	c.discardKeys(obsolete)
	return nil
}

// discardKeys deletes key files; a failure leaves an orphan that the next
// load removes, so it is only logged.
func (c *CA) discardKeys(names []string) {
	for _, name := range names {
		if name == "" {
			continue
		}
		if err := c.files.removeKey(name); err != nil {
			c.log.Warn("delete CA private key file", telemetry.Path, name, telemetry.Error, err)
		}
	}
}

// needNext reports whether a next slot must be created now.
func needNext(slots []slot, now time.Time) bool {
	if find(slots, statusNext) != nil {
		return false
	}
	active := find(slots, statusActive)
	return active == nil || !now.Before(active.prepareAt())
}

// retireExpired retires active or next slots that expired (after an
// outage longer than their life), so that a fresh pair can be made; it
// returns their key files.
func retireExpired(slots []slot, now time.Time) []string {
	var files []string
	for i := range slots {
		s := &slots[i]
		if s.status != statusRetired && !s.live(now) {
			files = append(files, retire(s))
		}
	}
	return files
}

// retire marks s retired, drops its private key and returns its key file.
func retire(s *slot) string {
	f := s.keyFile
	s.status, s.key, s.keyFile, s.signer = statusRetired, nil, "", nil
	return f
}

// event returns a function that logs and counts one rotation step once
// it is committed.
func (c *CA) event(kind, step string, s *slot) func() {
	id, notAfter := s.id, s.notAfter
	return func() {
		c.metrics.rotations.WithLabelValues(kind, step).Inc()
		idKey := telemetry.KeyID
		if kind == kindX509 {
			idKey = telemetry.Serial
		}
		c.log.Info("CA rotation: "+step+" "+kind, idKey, id, telemetry.ExpiresAt, notAfter.UTC().Format(time.RFC3339))
	}
}

// Run calls Rotate whenever a rotation step falls due, and at least every
// minute as a safety net against clock jumps, until ctx ends; then it
// returns nil. A failed step is logged and retried after 10 s.
func (c *CA) Run(ctx context.Context) error {
	for {
		wait := c.tick
		if err := c.Rotate(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Error("CA rotation step failed; will retry", telemetry.Error, err)
			wait = min(retryDelay, c.tick)
		} else if ev := c.nextEvent(); !ev.IsZero() && ev.Sub(c.clock.Now()) < wait {
			// A due event is handled by the Rotate just done; the floor
			// only stops a clock that stands still from spinning the loop.
			wait = max(ev.Sub(c.clock.Now()), min(100*time.Millisecond, c.tick))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// nextEvent is the earliest time at which Rotate has something to do.
func (c *CA) nextEvent() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	consider := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, slots := range [][]slot{c.state.x509, c.state.jwt} {
		active, nxt := find(slots, statusActive), find(slots, statusNext)
		switch {
		case active != nil && nxt != nil:
			consider(activateAt(active, nxt))
		case active != nil:
			consider(active.prepareAt())
		}
		for i := range slots {
			consider(slots[i].notAfter)
		}
	}
	for _, a := range c.state.anchors {
		consider(a.NotAfter)
	}
	return next
}
