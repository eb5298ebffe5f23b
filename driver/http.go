package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/securevol/securevol/internal/logging"
)

// MaxRequestBytes bounds a request body. The engine's largest request is a
// Create with a few options, well under a kilobyte.
const MaxRequestBytes = 64 << 10

// ContentType is what the plugin protocol speaks (and what the helper sends).
const ContentType = "application/vnd.docker.plugins.v1.1+json"

// engineLongestCall is how long the engine waits for a volume plugin's
// answer at most: 2 minutes for Mount, 1 minute for every other call
// (moby's volume/drivers proxy).
const engineLongestCall = 2 * time.Minute

// ServerLimits bound what one client of a plugin socket can hold: a
// connection that sends half a request, or none, or never reads its answer
// must not hold a goroutine and a descriptor for ever.
type ServerLimits struct {
	ReadHeader time.Duration // from connect (kept alive: the request's first byte) to the end of the headers
	Read       time.Duration // the whole request, body included
	Idle       time.Duration // a kept-alive connection between two requests
	// Write runs from the end of the request to the end of the answer, so
	// it includes the handler's work (a Mount) and must outlast it; 0 is
	// no limit. Read deadlines do not cut a handler off: it still answers.
	Write          time.Duration
	MaxHeaderBytes int
}

// DefaultServerLimits are the plugin socket's limits. The engine's
// requests are a few hundred bytes sent at once, so a slow one is stuck,
// not slow. Write exceeds the longest the engine waits (a 2-minute Mount),
// so no answer the engine still waits for is ever cut; it only frees a
// connection whose client stopped reading.
func DefaultServerLimits() ServerLimits {
	return ServerLimits{
		ReadHeader:     10 * time.Second,
		Read:           30 * time.Second,
		Idle:           2 * time.Minute,
		Write:          engineLongestCall + 3*time.Minute,
		MaxHeaderBytes: 16 << 10,
	}
}

// NewServer returns an HTTP server for h with limits l; the caller serves
// it on its Unix socket.
func NewServer(h http.Handler, l ServerLimits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeader,
		ReadTimeout:       l.Read,
		IdleTimeout:       l.Idle,
		WriteTimeout:      l.Write,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// NewHandler serves Docker's volume plugin protocol for drv. It answers as
// go-plugins-helpers' volume.NewHandler does (same paths, same JSON, 500
// with {"Err": ...} when the driver fails), and adds what that helper
// lacks: a body size limit (413), JSON errors for malformed requests (400),
// POST only (405), and a recovered panic becoming a 500 instead of a
// dropped connection.
func NewHandler(drv volume.Driver, log *logrus.Entry) http.Handler {
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	mux := http.NewServeMux()
	handle := func(path string, fn func(body []byte) (any, error)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			defer func() {
				if p := recover(); p != nil {
					log.WithField(logging.FieldOp, path).Errorf("panic: %v\n%s", p, debug.Stack())
					writeJSON(w, http.StatusInternalServerError, volume.ErrorResponse{Err: "internal error in the securevol plugin (see its log)"})
				}
			}()
			if r.Method != http.MethodPost {
				w.Header().Set("Allow", http.MethodPost)
				writeJSON(w, http.StatusMethodNotAllowed, volume.ErrorResponse{Err: "use POST"})
				return
			}
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeJSON(w, http.StatusRequestEntityTooLarge, volume.ErrorResponse{Err: fmt.Sprintf("request body larger than %d bytes", MaxRequestBytes)})
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The server's read limit passed mid-body (the error
				// would only name our own socket).
				writeJSON(w, http.StatusRequestTimeout, volume.ErrorResponse{Err: "the request body did not arrive in time"})
				return
			}
			if err != nil {
				writeJSON(w, http.StatusBadRequest, volume.ErrorResponse{Err: "reading request: " + err.Error()})
				return
			}
			res, err := fn(body)
			var bad badRequest
			switch {
			case errors.As(err, &bad):
				writeJSON(w, http.StatusBadRequest, volume.ErrorResponse{Err: err.Error()})
			case err != nil:
				writeJSON(w, http.StatusInternalServerError, volume.ErrorResponse{Err: err.Error()})
			default:
				writeJSON(w, http.StatusOK, res)
			}
			log.WithFields(logrus.Fields{logging.FieldOp: path, "took": time.Since(start).Round(time.Microsecond), "error": errString(err)}).Debug("request")
		})
	}

	handle("/Plugin.Activate", func([]byte) (any, error) {
		return map[string][]string{"Implements": {"VolumeDriver"}}, nil
	})
	handle("/VolumeDriver.Create", func(b []byte) (any, error) {
		var req volume.CreateRequest
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		log.WithFields(logrus.Fields{"volume": req.Name, "options": slices.Sorted(maps.Keys(req.Options))}).Debug("create")
		return struct{}{}, drv.Create(&req)
	})
	handle("/VolumeDriver.Remove", func(b []byte) (any, error) {
		var req volume.RemoveRequest
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		return struct{}{}, drv.Remove(&req)
	})
	handle("/VolumeDriver.Mount", func(b []byte) (any, error) {
		var req volume.MountRequest
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		return drv.Mount(&req)
	})
	handle("/VolumeDriver.Unmount", func(b []byte) (any, error) {
		var req volume.UnmountRequest
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		return struct{}{}, drv.Unmount(&req)
	})
	handle("/VolumeDriver.Path", func(b []byte) (any, error) {
		var req volume.PathRequest
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		return drv.Path(&req)
	})
	handle("/VolumeDriver.Get", func(b []byte) (any, error) {
		var req volume.GetRequest
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		return drv.Get(&req)
	})
	handle("/VolumeDriver.List", func([]byte) (any, error) { return drv.List() })
	handle("/VolumeDriver.Capabilities", func([]byte) (any, error) { return drv.Capabilities(), nil })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, volume.ErrorResponse{Err: "unknown call " + r.URL.Path + " (this is a VolumeDriver plugin)"})
	})
	return mux
}

// badRequest marks errors in the request itself (answered with 400).
type badRequest struct{ error }

func (b badRequest) Unwrap() error { return b.error }

// decode parses a request body. The whole body must be one JSON object:
// the helper's json.Decoder accepts trailing garbage, which hides bugs.
func decode(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return badRequest{fmt.Errorf("malformed request: %v", err)}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"Err":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
