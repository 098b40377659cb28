//go:build race

package agentapi

// raceEnabled: the race detector limits a process to 8128 goroutines,
// which a 2000-agent storm exceeds.
const raceEnabled = true
