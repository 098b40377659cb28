package ca

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/nhid/nhid/pkg/svid"
	"github.com/nhid/nhid/pkg/telemetry"
)

const (
	stateFileName = "state.json"
	stateVersion  = 1
	dirPerm       = 0o700
	keyPerm       = 0o600
	tmpMarker     = ".tmp-"
)

// fileStore keeps the CA's state in one directory: state.json (certificates,
// public keys, statuses; the source of truth) and one PKCS#8 PEM file per
// private key. Every file is replaced atomically, and a key file is always
// written before the state that refers to it, so a crash at any moment
// leaves a loadable directory: at worst a key file no state refers to,
// which load removes.
type fileStore struct {
	dir string
	log *slog.Logger
}

// init creates the directory, or tightens its mode if it is looser.
func (f *fileStore) init() error {
	if err := os.MkdirAll(f.dir, dirPerm); err != nil {
		return fmt.Errorf("ca config: Dir: create %s: %w", f.dir, err)
	}
	fi, err := os.Stat(f.dir)
	if err != nil {
		return fmt.Errorf("ca config: Dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("ca config: Dir: %s is not a directory", f.dir)
	}
	if fi.Mode().Perm()&^dirPerm != 0 {
		if err := os.Chmod(f.dir, dirPerm); err != nil {
			return fmt.Errorf("ca config: Dir: restrict %s to 0700: %w", f.dir, err)
		}
		f.log.Warn("CA directory was accessible to others; restricted it to 0700", telemetry.Path, f.dir)
	}
	return nil
}

func (f *fileStore) statePath() string { return filepath.Join(f.dir, stateFileName) }

// load reads the persisted state; a missing state file is an empty state.
func (f *fileStore) load() (state, error) {
	path := f.statePath()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		f.removeOrphans(state{})
		return state{}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("read CA state: %w", err)
	}
	var rec stateRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return state{}, corruptError(path, err)
	}
	if rec.Version != stateVersion {
		return state{}, corruptError(path, fmt.Errorf("version %d, want %d", rec.Version, stateVersion))
	}
	st, err := f.fromRecord(rec)
	if err != nil {
		return state{}, corruptError(path, err)
	}
	f.removeOrphans(st)
	return st, nil
}

func corruptError(path string, err error) error {
	return fmt.Errorf("CA state %s is unusable: %w (refusing to start a new CA over it: "+
		"restore the file, or move its directory away to start a new CA)", path, err)
}

// save persists st atomically.
func (f *fileStore) save(st state) error {
	data, err := json.MarshalIndent(toRecord(st), "", "  ")
	if err != nil {
		return fmt.Errorf("encode CA state: %w", err)
	}
	if err := f.writeAtomic(stateFileName, append(data, '\n'), keyPerm); err != nil {
		return fmt.Errorf("save CA state: %w", err)
	}
	return nil
}

// writeKey stores key as name, PKCS#8 PEM, mode 0600.
func (f *fileStore) writeKey(name string, key crypto.Signer) error {
	data, err := svid.EncodePrivateKeyPEM(key)
	if err != nil {
		return err
	}
	if err := f.writeAtomic(name, data, keyPerm); err != nil {
		return fmt.Errorf("save private key: %w", err)
	}
	return nil
}

// readKey loads a key file written by writeKey.
func (f *fileStore) readKey(name string) (crypto.Signer, error) {
	if name == "" || filepath.Base(name) != name || !isKeyFileName(name) {
		return nil, fmt.Errorf("key file %q: not a key file name", name)
	}
	path := filepath.Join(f.dir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&^keyPerm != 0 {
		if err := os.Chmod(path, keyPerm); err != nil {
			return nil, fmt.Errorf("key file %s: restrict to 0600: %w", name, err)
		}
		f.log.Warn("CA key file was accessible to others; restricted it to 0600", telemetry.Path, path)
	}
	key, err := svid.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", name, err)
	}
	return key, nil
}

// removeKey deletes a key file that no state refers to any more.
func (f *fileStore) removeKey(name string) error {
	err := os.Remove(filepath.Join(f.dir, name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove key file: %w", err)
	}
	return nil
}

// writeAtomic replaces name with data: temp file, fsync, rename, fsync of
// the directory, so that readers and crashes see the old or the new file.
func (f *fileStore) writeAtomic(name string, data []byte, perm os.FileMode) (err error) {
	tmp, err := os.CreateTemp(f.dir, "."+name+tmpMarker+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), filepath.Join(f.dir, name)); err != nil {
		return err
	}
	return syncDir(f.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func isKeyFileName(name string) bool {
	return (strings.HasPrefix(name, "x509-") || strings.HasPrefix(name, "jwt-")) && strings.HasSuffix(name, ".key")
}

// removeOrphans deletes leftovers of an interrupted write: temp files and
// key files st does not refer to. An unreferenced key never signed
// anything (keys are persisted in the state before they are used), so
// removing it loses nothing and keeps no secret lying around.
func (f *fileStore) removeOrphans(st state) {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		f.log.Warn("list CA directory for leftovers", telemetry.Path, f.dir, telemetry.Error, err)
		return
	}
	used := make(map[string]bool)
	for _, slots := range [][]slot{st.x509, st.jwt} {
		for _, s := range slots {
			used[s.keyFile] = true
		}
	}
	for _, e := range entries {
		name := e.Name()
		orphan := strings.Contains(name, tmpMarker) || (isKeyFileName(name) && !used[name])
		if !orphan || e.IsDir() {
			continue
		}
		path := filepath.Join(f.dir, name)
		if err := os.Remove(path); err != nil {
			f.log.Warn("remove leftover CA file", telemetry.Path, path, telemetry.Error, err)
			continue
		}
		f.log.Warn("removed leftover CA file of an interrupted rotation", telemetry.Path, path)
	}
}
