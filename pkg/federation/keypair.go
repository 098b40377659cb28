package federation

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nhid/nhid/pkg/telemetry"
)

// keyPairCheckEvery is how often, at most, the certificate files are
// looked at for a change: a handshake costs two stats at most that often.
const keyPairCheckEvery = 10 * time.Second

// keyPair is a Web PKI certificate and key read from files and read again
// when either file changes (a certificate manager renewed them). A pair
// that does not load leaves the previous one in use.
type keyPair struct {
	certFile, keyFile string
	log               *slog.Logger
	checkEvery        time.Duration

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]fileStamp
	checkedAt time.Time
}

// fileStamp is what tells a file changed without reading it.
type fileStamp struct {
	mod  time.Time
	size int64
}

func newKeyPair(certFile, keyFile string, log *slog.Logger) (*keyPair, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("CertFile and KeyFile: required with profile https_web")
	}
	kp := &keyPair{certFile: certFile, keyFile: keyFile, log: log, checkEvery: keyPairCheckEvery}
	if err := kp.load(); err != nil {
		return nil, err
	}
	kp.checkedAt = time.Now()
	return kp, nil
}

// LoadKeyPair checks that certFile and keyFile hold a matching
// certificate chain and key, for configuration checks.
func LoadKeyPair(certFile, keyFile string) error {
	_, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return nil
}

func (kp *keyPair) load() error {
	stamp, err := kp.stamps()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s and key %s: %w", kp.certFile, kp.keyFile, err)
	}
	kp.cert, kp.stamp = &cert, stamp
	return nil
}

func (kp *keyPair) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, f := range []string{kp.certFile, kp.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return out, err
		}
		out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out, nil
}

// get is tls.Config.GetCertificate.
func (kp *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if now := time.Now(); now.Sub(kp.checkedAt) >= kp.checkEvery {
		kp.checkedAt = now
		if stamp, err := kp.stamps(); err == nil && stamp != kp.stamp {
			if err := kp.load(); err != nil {
				kp.log.Warn("bundle endpoint keeps its certificate: the new files do not load", telemetry.Error, err.Error())
			} else {
				kp.log.Info("bundle endpoint certificate reloaded", telemetry.Path, kp.certFile)
			}
		}
	}
	return kp.cert, nil
}
