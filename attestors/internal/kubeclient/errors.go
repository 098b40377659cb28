package kubeclient

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "k8s.io/apimachinery/pkg/util/json"
)

// maxMessage bounds how much of a server's error message is kept.
const maxMessage = 512

// APIError is an answer outside 2xx, with the reason and message of the
// Kubernetes Status the body held, if it held one.
type APIError struct {
	// Method and URL of the request (the URL holds no secret).
	Method, URL string
	// StatusCode is the HTTP status code.
	StatusCode int
	// Reason is the Status's machine-readable reason ("NotFound", ...).
	Reason metav1.StatusReason
	// Message is the Status's message, cut to a bounded length.
	Message string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

func newAPIError(method, url string, code int, body []byte) *APIError {
	e := &APIError{Method: method, URL: url, StatusCode: code}
	var st metav1.Status
	if kjson.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		e.Reason, e.Message = st.Reason, printable(st.Message)
	}
	return e
}

// printable keeps a message to one bounded line of printable text, since
// it ends up in logs.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	if len(s) > maxMessage {
		s = s[:maxMessage] + "…"
	}
	return s
}

// StatusCode returns the HTTP status of an APIError in err's chain, or 0.
func StatusCode(err error) int {
	var e *APIError
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// IsAuthError reports whether the server refused the client's own
// credentials (401) or permissions (403).
func IsAuthError(err error) bool {
	c := StatusCode(err)
	return c == http.StatusUnauthorized || c == http.StatusForbidden
}
