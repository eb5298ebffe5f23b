package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/driver"
)

// Client calls a running daemon's admin socket. The caller must be root.
type Client struct {
	sock string
	http *http.Client
}

// dialWait bounds the connection to the admin socket.
const dialWait = 2 * time.Second

// maxAnswer bounds an admin answer read (a list of every volume's facts).
const maxAnswer = 64 << 20

// Dial returns a Client of the daemon on stateDir. ErrNoDaemon means none
// answers there (no socket, or a stale one left by a crash).
func Dial(stateDir string) (*Client, error) {
	sock := AdminSocket(stateDir)
	conn, err := net.DialTimeout("unix", sock, dialWait)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("%s: %w", sock, ErrNoDaemon)
		}
		return nil, fmt.Errorf("admin socket %s: %w", sock, err)
	}
	conn.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dialUnix(ctx, sock) }}
	return &Client{sock: sock, http: &http.Client{Transport: tr}}, nil
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// RotateKey has the daemon re-wrap every volume under key and make it the
// daemon's key file (see RotateKey for the protocol's safety).
func (c *Client) RotateKey(ctx context.Context, key []byte) (*RotateKeyResult, error) {
	var res RotateKeyResult
	req := RotateKeyRequest{Key: key}
	if err := c.call(ctx, callRotateKey, &req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Volumes lists every volume with its facts, by name.
func (c *Client) Volumes(ctx context.Context) ([]VolumeInfo, error) {
	var res VolumesResult
	if err := c.call(ctx, callVolumes, &VolumesRequest{}, &res); err != nil {
		return nil, err
	}
	return res.Volumes, nil
}

// Volume describes one volume; ErrNoSuchVolume if there is none so named.
func (c *Client) Volume(ctx context.Context, name string) (*VolumeInfo, error) {
	var res VolumeInfo
	if err := c.call(ctx, callVolume, &VolumeRequest{Name: name}, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Release drops the volume's stale mount references (those of mountID, or
// all when it is "") and answers how many it dropped.
func (c *Client) Release(ctx context.Context, name, mountID string) (int, error) {
	var res ReleaseResult
	if err := c.call(ctx, callRelease, &ReleaseRequest{Name: name, MountID: mountID}, &res); err != nil {
		return 0, err
	}
	return res.Released, nil
}

// Removed lists the volumes removed within their grace period.
func (c *Client) Removed(ctx context.Context) ([]driver.RemovedVolume, error) {
	var res RemovedResult
	if err := c.call(ctx, callRemoved, &RemovedRequest{}, &res); err != nil {
		return nil, err
	}
	return res.Volumes, nil
}

// Undelete brings back the removed volume name (the one whose folder is id,
// if several removed volumes share the name).
func (c *Client) Undelete(ctx context.Context, name, id string) error {
	return c.call(ctx, callUndelete, &UndeleteRequest{Name: name, ID: id}, &UndeleteResult{})
}

// Export has the daemon snapshot a volume into an archive layout in the
// state dir (ExportResult.Dir; see TransferPath), which the caller deletes
// once it has read it.
func (c *Client) Export(ctx context.Context, req ExportRequest) (*ExportResult, error) {
	var res ExportResult
	if err := c.call(ctx, callExport, &req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Import has the daemon make the archive layout in the state dir
// (req.Dir, from NewTransferDir) a new volume.
func (c *Client) Import(ctx context.Context, req ImportRequest) (*ImportResult, error) {
	var res ImportResult
	if err := c.call(ctx, callImport, &req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Clone has the daemon make the new volume name with source's contents.
func (c *Client) Clone(ctx context.Context, source, name string) (*CloneResult, error) {
	var res CloneResult
	if err := c.call(ctx, callClone, &CloneRequest{Source: source, Name: name}, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// RemoteError is an admin call's failure as the daemon told it. It wraps
// the sentinel the daemon's error wrapped, if the protocol carries it.
type RemoteError struct {
	Call string
	Msg  string
	Err  error // a sentinel of this package, or nil
}

func (e *RemoteError) Error() string { return "daemon: " + e.Msg }
func (e *RemoteError) Unwrap() error { return e.Err }

// call posts req to the admin call name and decodes the answer into res.
// The encoded request is wiped after sending: it may hold a key.
func (c *Client) call(ctx context.Context, name string, req, res any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	defer clear(body)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://securevol/Admin."+name, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hreq)
	if err != nil {
		return fmt.Errorf("asking the daemon: %w", err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer))
	if resp.StatusCode != http.StatusOK {
		var e errorReply
		if err := dec.Decode(&e); err != nil || e.Err == "" {
			return fmt.Errorf("daemon answered %s", resp.Status)
		}
		re := &RemoteError{Call: name, Msg: e.Err}
		for _, we := range wireErrors() {
			if we.code == e.Code {
				re.Err = we.err
			}
		}
		return re
	}
	if err := dec.Decode(res); err != nil {
		return fmt.Errorf("daemon answer to %s: %w", name, err)
	}
	return nil
}
