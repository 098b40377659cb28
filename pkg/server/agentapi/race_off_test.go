//go:build !race

package agentapi

// raceEnabled: see race_on_test.go.
const raceEnabled = false
