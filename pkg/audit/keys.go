package audit

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// ActorServer is the actor of records the server makes on its own account.
const ActorServer = "server"

// AnnounceKey is the audit.key event a server records at start: it puts
// the public half of its checkpoint key into the chain, so that a verifier
// can trust that key once a checkpoint by an already trusted key covers
// the announcement (docs/audit.md).
func AnnounceKey(publicKeyDER []byte, reason string) Event {
	id := KeyID(publicKeyDER)
	return Event{
		Actor: ActorServer, Action: ActionAuditKey, Target: id, Outcome: OutcomeSuccess, Reason: reason,
		Details: map[string]any{"key_id": id, "public_key": base64.StdEncoding.EncodeToString(publicKeyDER)},
	}
}

// ParseKeyAnnouncement returns the key an audit.key record announces: its
// id and PKIX (DER) public key. The record's target and the details' key_id
// must both name the key.
func ParseKeyAnnouncement(r *typesv1.AuditRecord) (keyID string, publicKeyDER []byte, err error) {
	if r.GetAction() != ActionAuditKey {
		return "", nil, fmt.Errorf("action is %q, not %q", r.GetAction(), ActionAuditKey)
	}
	var d struct {
		KeyID     string `json:"key_id"`
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal([]byte(r.GetDetails()), &d); err != nil {
		return "", nil, fmt.Errorf("details: %w", err)
	}
	der, err := base64.StdEncoding.DecodeString(d.PublicKey)
	if err != nil {
		return "", nil, fmt.Errorf("details.public_key: %w", err)
	}
	if _, err := ParsePublicKey(der); err != nil {
		return "", nil, fmt.Errorf("details.public_key: %w", err)
	}
	id := KeyID(der)
	if d.KeyID != id || r.GetTarget() != id {
		return "", nil, errors.New("key_id or target does not name the announced public key")
	}
	return id, der, nil
}
