package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/internal/logging"
)

// maxAdminRequest bounds an admin request body: a base64 key, a name, or
// an export's age recipients (a post-quantum one is about 2 KB) in a small
// JSON object.
const maxAdminRequest = 64 << 10

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

// adminServer returns the admin socket's HTTP server.
func (s *service) adminServer() *http.Server {
	m := &adminMux{mux: http.NewServeMux(), log: s.log}
	s.routes(m)
	srv := driver.NewServer(m.mux, adminLimits())
	srv.ConnContext = peerCredContext
	return srv
}

// routes registers every admin call (see api.go).
func (s *service) routes(m *adminMux) {
	handle(m, callRotateKey, s.rotateKey)
	handle(m, callVolumes, s.volumes)
	handle(m, callVolume, s.volume)
	handle(m, callRelease, s.release)
	handle(m, callRemoved, s.removed)
	handle(m, callUndelete, s.undelete)
	handle(m, callExport, s.export)
	handle(m, callImport, s.importVolume)
	handle(m, callClone, s.clone)
}

// adminMux serves the admin calls.
type adminMux struct {
	mux *http.ServeMux
	log *logrus.Entry
}

// handle registers fn as the admin call name: the caller's credentials are
// checked, the body is decoded into a Req (and wiped afterwards: it may
// hold a key), and fn's result or error is answered as JSON.
func handle[Req, Res any](m *adminMux, name string, fn func(context.Context, *Req) (*Res, error)) {
	op := "Admin." + name
	m.mux.HandleFunc("POST /"+op, func(w http.ResponseWriter, r *http.Request) {
		log := m.log.WithField(logging.FieldOp, op)
		if !peerIsRoot(r.Context()) {
			log.Warn("admin call refused: the caller is not root")
			writeError(w, ErrForbidden)
			return
		}
		var req Req
		if err := decodeRequest(w, r, &req); err != nil {
			writeError(w, err)
			return
		}
		res, err := fn(r.Context(), &req)
		if err != nil {
			reply, status := replyFor(err)
			// The caller's mistake (a name that does not exist) is no
			// problem of the daemon's.
			if status < 500 {
				log.WithError(err).Debug("admin call refused")
			} else {
				log.WithError(err).Warn("admin call failed")
			}
			writeAnswer(w, status, reply)
			return
		}
		writeAnswer(w, http.StatusOK, res)
	})
}

// decodeRequest reads the body (at most maxAdminRequest bytes) into v and
// wipes the bytes read.
func decodeRequest(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminRequest))
	defer clear(body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return fmt.Errorf("request body larger than %d bytes: %w", maxAdminRequest, ErrTooLarge)
	case err != nil:
		return fmt.Errorf("reading the request: %w", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		// The decoder's message may quote the body, which may hold a key.
		return fmt.Errorf("malformed request: %w", ErrBadRequest)
	}
	return nil
}

func writeError(w http.ResponseWriter, err error) {
	reply, status := replyFor(err)
	writeAnswer(w, status, reply)
}

// replyFor is the answer and status for err: its sentinel's (wireErrors),
// else 500.
func replyFor(err error) (errorReply, int) {
	for _, we := range wireErrors() {
		if errors.Is(err, we.err) {
			return errorReply{Err: err.Error(), Code: we.code}, we.status
		}
	}
	return errorReply{Err: err.Error()}, http.StatusInternalServerError
}

func writeAnswer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

type peerKey struct{}

// peerCredContext records the connecting process's credentials: the
// socket's mode already admits only root, and peerIsRoot checks again.
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

// peerIsRoot reports whether the caller is root (or the daemon's own user).
func peerIsRoot(ctx context.Context) bool {
	cred, _ := ctx.Value(peerKey{}).(*unix.Ucred)
	return cred != nil && (cred.Uid == 0 || int(cred.Uid) == os.Geteuid())
}
