package agent

// RenewNow makes a running agent renew its SVID at once.
func RenewNow(a *Agent) {
	select {
	case a.renewNow <- struct{}{}:
	default:
	}
}
