// Package notify tells people about things that need them: a grant waiting
// for approval, a reputation score that crossed a threshold. The webhook
// sender posts signed JSON (HMAC-SHA256) and retries with backoff; the
// router sends each owner's notifications to the webhook of the route
// that matches the owner (a team's own endpoint and secret), each route
// with its own queue. docs/notifications.md describes the body, the
// routing and how to check the signature.
package notify

import "context"

// Notification types, the body's "type" field.
const (
	TypeApprovalRequested    = "approval.requested"
	TypeReputationAlert      = "reputation.alert"
	TypeReputationRestricted = "reputation.restricted"
)

// Notification is one message for a subject's owner.
type Notification struct {
	// Type is one of the Type* constants.
	Type string
	// Owner is the accountable human the message is for.
	Owner string
	// Subject is the SPIFFE ID the message is about.
	Subject string
	// Data holds the particulars (the grant, the score); JSON-marshalable,
	// never secrets.
	Data map[string]any
}

// Notifier sends notifications. Notify never blocks for long and never
// fails its caller: delivery and its retries happen in the background.
type Notifier interface {
	Notify(ctx context.Context, n Notification)
}

// Discard drops every notification.
var Discard Notifier = discard{}

type discard struct{}

func (discard) Notify(context.Context, Notification) {}

// OrDiscard returns n, or Discard when n is nil.
func OrDiscard(n Notifier) Notifier {
	if n == nil {
		return Discard
	}
	return n
}
