package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/keyfile"
	"github.com/securevol/securevol/store"
)

// admin serves the daemon's root-only control socket. Its one call rotates
// the master key, because bbolt lets one process hold the database and
// the running daemon is that process.
type admin struct {
	cfg  *serveConfig
	drv  *driver.Driver
	log  *logrus.Entry
	keys *daemonKeys
	mu   sync.Mutex // one rotation at a time
}

type rotateRequest struct {
	Key []byte // the new master key (base64 in JSON); travels only over the 0600 socket
}

type rotateResponse struct {
	Rewrapped int    `json:",omitempty"`
	KeyFile   string `json:",omitempty"`
	Err       string `json:",omitempty"`
}

// maxAdminRequest bounds the admin socket's request body: a base64 key in
// a small JSON object.
const maxAdminRequest = 4096

// adminLimits are the plugin socket's limits without the write limit: a
// rotation re-wraps every volume, so its time grows with their number, and
// an answer cut off would report a rotation that succeeded as failed. The
// answer is a few bytes that the socket buffer takes at once, so a client
// that never reads it holds nothing.
func adminLimits() driver.ServerLimits {
	l := driver.DefaultServerLimits()
	l.Write = 0
	return l
}

type peerKey struct{}

// peerCredContext records the connecting process's credentials: the
// socket's mode already admits only root, and this checks it again.
func peerCredContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, cred)
}

// server returns the admin socket's HTTP server.
func (a *admin) server() *http.Server {
	s := driver.NewServer(a.handler(), adminLimits())
	s.ConnContext = peerCredContext
	return s
}

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Admin.RotateKey", func(w http.ResponseWriter, r *http.Request) {
		cred, _ := r.Context().Value(peerKey{}).(*unix.Ucred)
		if cred == nil || (cred.Uid != 0 && int(cred.Uid) != os.Geteuid()) {
			writeAdmin(w, http.StatusForbidden, rotateResponse{Err: "only root may rotate the master key"})
			return
		}
		var req rotateRequest
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminRequest))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			clear(body)
			writeAdmin(w, http.StatusRequestEntityTooLarge, rotateResponse{Err: fmt.Sprintf("request body larger than %d bytes", maxAdminRequest)})
			return
		}
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		clear(body)
		if err != nil {
			writeAdmin(w, http.StatusBadRequest, rotateResponse{Err: "malformed request"})
			return
		}
		defer clear(req.Key)
		if len(req.Key) != crypto.KeySize {
			writeAdmin(w, http.StatusBadRequest, rotateResponse{Err: fmt.Sprintf("the new key must be %d bytes", crypto.KeySize)})
			return
		}
		n, err := a.rotate(req.Key)
		if err != nil {
			writeAdmin(w, http.StatusInternalServerError, rotateResponse{Err: err.Error()})
			return
		}
		writeAdmin(w, http.StatusOK, rotateResponse{Rewrapped: n, KeyFile: a.cfg.keyFile})
	})
	return mux
}

func writeAdmin(w http.ResponseWriter, status int, v rotateResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// rotate re-wraps every volume under k and then makes k the daemon's key
// file. The new key is written to <key-file>.new first: if anything stops
// the rotation half-way, the next start knows both keys and finishes it.
func (a *admin) rotate(raw []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.keys.kind != "key file" {
		return 0, fmt.Errorf("the daemon takes its master key from a %s, which rotation cannot update; stop serve, run: securevol key rotate --key-file OLD --new-key-file NEW --state-dir %s, then point serve at the new key", a.keys.kind, a.cfg.stateDir)
	}
	return rotateKeyFile(a.cfg.keyFile, raw, a.drv, a.log)
}

// finishPendingRotation completes a rotation found cut short at start.
func (a *admin) finishPendingRotation() {
	a.mu.Lock()
	defer a.mu.Unlock()
	raw, _, err := loadKeyRaw(pendingKeyFile(a.cfg.keyFile))
	if err == nil {
		defer clear(raw)
		_, err = rotateKeyFile(a.cfg.keyFile, raw, a.drv, a.log)
	}
	if err != nil {
		a.log.WithError(err).Error("finishing the interrupted key rotation failed; both keys stay in use; run securevol key rotate again")
	}
}

// rotateKeyFile: write the new key beside the old one, re-wrap every
// folder, then rename the new key over the old.
func rotateKeyFile(keyFile string, raw []byte, drv *driver.Driver, log *logrus.Entry) (int, error) {
	k, err := crypto.NewMasterKey(raw)
	if err != nil {
		return 0, err
	}
	pending := pendingKeyFile(keyFile)
	if old, err := keyfile.LoadKeyFile(pending); err == nil && !old.Equal(k) {
		log.Warn("replacing the new key of an earlier, unfinished rotation")
	}
	if err := keyfile.WriteKeyFile(pending, raw); err != nil {
		return 0, err
	}
	rep, err := drv.RotateKey(crypto.StaticKey{Key: k})
	if err != nil {
		return 0, err
	}
	if err := keyfile.Install(pending, keyFile); err != nil {
		return 0, fmt.Errorf("volumes re-wrapped, but installing the new key file failed (it is %s; the next start finishes): %w", pending, err)
	}
	log.WithFields(logrus.Fields{"volumes": rep.Rewrapped, "key_file": keyFile}).Info("master key rotated; the old key opens nothing now")
	return rep.Rewrapped, nil
}

// runKeyRotate is `securevol key rotate`: re-wrap every volume's key under
// a new master key. With serve running it asks the daemon over its admin
// socket; otherwise it works on the state dir itself.
func runKeyRotate(args []string) error {
	fs := flag.NewFlagSet("key rotate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var newKeyFile, keyFile, stateDir string
	fs.StringVar(&newKeyFile, "new-key-file", "", "the new master key (make one with: securevol key generate FILE)")
	stringFlag(fs, &keyFile, "key-file", defaultKeyFile, "the daemon's key file, replaced by the new key (offline: also the old key)")
	stringFlag(fs, &stateDir, "state-dir", defaultStateDir, "the daemon's state dir")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fmt.Fprintln(os.Stderr, "usage: securevol key rotate --new-key-file F [--key-file OLD] [--state-dir DIR]")
			fs.PrintDefaults()
			return nil
		}
		return fmt.Errorf("%v: %w", err, errUsage)
	}
	if newKeyFile == "" || fs.NArg() > 0 {
		return fmt.Errorf("--new-key-file is required: %w", errUsage)
	}
	newRaw, newKey, err := loadKeyRaw(newKeyFile)
	if err != nil {
		return err
	}
	defer clear(newRaw)

	sock := filepath.Join(stateDir, adminSocketName)
	res, err := askDaemon(sock, newRaw)
	switch {
	case err == nil:
		fmt.Printf("rotated: %d volumes re-wrapped by the running daemon; %s now holds the new key\n", res.Rewrapped, res.KeyFile)
		return nil
	case !errors.Is(err, errNoDaemon):
		return err
	}

	// No daemon: take the database's lock, so no serve can start meanwhile.
	st, err := store.Open(dbPath(stateDir), time.Second)
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("serve holds %s but does not answer on %s; stop it and run this again", dbPath(stateDir), sock)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	if filepath.Clean(newKeyFile) == filepath.Clean(keyFile) {
		return fmt.Errorf("--new-key-file and --key-file are the same file: %w", errUsage)
	}
	oldKey, err := keyfile.LoadKeyFile(keyFile)
	if err != nil {
		return fmt.Errorf("the old key (--key-file): %w", err)
	}
	keys := []crypto.KeySource{crypto.StaticKey{Key: oldKey}}
	// An earlier rotation cut short may have re-wrapped some volumes
	// under its own new key already.
	if pk, err := keyfile.LoadKeyFile(pendingKeyFile(keyFile)); err == nil && !pk.Equal(newKey) {
		keys = append(keys, crypto.StaticKey{Key: pk})
	}
	log := newServeLogger(&serveConfig{logLevel: "warn", logFormat: "text"})
	drv, err := driver.New(driver.Config{StateDir: stateDir, MountRoot: filepath.Join(stateDir, "mnt"), Store: st, Keys: keys, Log: log})
	if err != nil {
		return err
	}
	n, err := rotateKeyFile(keyFile, newRaw, drv, log)
	if err != nil {
		return err
	}
	fmt.Printf("rotated: %d volumes re-wrapped; %s now holds the new key\n", n, keyFile)
	return nil
}

var errNoDaemon = errors.New("no daemon")

// askDaemon sends the rotation to a running daemon. errNoDaemon means none
// answers on sock (absent, or stale after a crash).
func askDaemon(sock string, raw []byte) (*rotateResponse, error) {
	conn, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, errNoDaemon
		}
		return nil, fmt.Errorf("admin socket %s: %w", sock, err)
	}
	conn.Close()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	body, _ := json.Marshal(rotateRequest{Key: raw})
	resp, err := c.Post("http://securevol/Admin.RotateKey", "application/json", strings.NewReader(string(body)))
	clear(body)
	if err != nil {
		return nil, fmt.Errorf("asking the daemon: %w", err)
	}
	defer resp.Body.Close()
	var res rotateResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&res); err != nil {
		return nil, fmt.Errorf("daemon answered %s", resp.Status)
	}
	if res.Err != "" {
		return nil, fmt.Errorf("daemon: %s", res.Err)
	}
	return &res, nil
}

// loadKeyRaw reads a key file (checked as keyfile.LoadKeyFile checks it: 32 bytes,
// not readable by group or others) and returns its bytes too, which the
// rotation copies into the daemon's key file.
func loadKeyRaw(path string) ([]byte, *crypto.MasterKey, error) {
	k, err := keyfile.LoadKeyFile(path)
	if err != nil {
		return nil, nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("key file: %w", err)
	}
	if k2, err := crypto.NewMasterKey(raw); err != nil || !k2.Equal(k) {
		clear(raw)
		return nil, nil, fmt.Errorf("key file %s changed while being read", path)
	}
	return raw, k, nil
}
