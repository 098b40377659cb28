package grantreq_test

import (
	"errors"
	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/grantreq/grantreqtest"
	"strings"
	"testing"

	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

func TestValidateRequest_RejectsBadInputNamingTheField(t *testing.T) {
	for _, tc := range grantreqtest.BadRequests() {
		t.Run(tc.Name, func(t *testing.T) {
			r := grantreqtest.ValidRequest()
			tc.Mod(r)
			err := grantreq.ValidateRequest(r)
			if !errors.Is(err, grantreq.ErrInvalidRequest) {
				t.Fatalf("ValidateRequest = %v, want grantreq.ErrInvalidRequest", err)
			}
			if !strings.Contains(err.Error(), tc.Want) {
				t.Errorf("error %q does not contain %q", err, tc.Want)
			}
		})
	}
}

func TestValidateRequest_AcceptsAWellFormedRequest(t *testing.T) {
	if err := grantreq.ValidateRequest(grantreqtest.ValidRequest()); err != nil {
		t.Fatalf("ValidateRequest: %v", err)
	}
	r := grantreqtest.ValidRequest()
	r.AuthorizationDetails, r.Resource, r.Action = "", "", ""
	if err := grantreq.ValidateRequest(r); err != nil {
		t.Fatalf("ValidateRequest without optional fields: %v", err)
	}
	if err := grantreq.ValidateRequest(nil); !errors.Is(err, grantreq.ErrInvalidRequest) {
		t.Errorf("ValidateRequest(nil) = %v, want grantreq.ErrInvalidRequest", err)
	}
}

func TestValidateRequest_ReportsEveryProblemAtOnce(t *testing.T) {
	err := grantreq.ValidateRequest(&grantv1.GrantRequest{Scopes: []string{"a b"}, Ttl: -1})
	for _, want := range []string{"scopes[0]:", "reason: required", "ttl: -1 s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

func TestLimits_Check(t *testing.T) {
	if err := grantreq.DefaultLimits().Check(); err != nil {
		t.Errorf("DefaultLimits().Check() = %v", err)
	}
	loose := grantreq.DefaultLimits()
	loose.MaxReasonBytes = 4096
	if err := loose.Check(); err == nil || !strings.Contains(err.Error(), "MaxReasonBytes") {
		t.Errorf("limits looser than the defaults: Check() = %v, want an error naming MaxReasonBytes", err)
	}
}
