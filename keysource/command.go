package keysource

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/securevol/securevol/crypto"
)

// CommandTimeout bounds a key command: the engine gives a managed plugin
// only seconds to start listening.
const CommandTimeout = 5 * time.Second

// commandWaitDelay is how long the output is still read after the program
// exited or was killed.
const commandWaitDelay = time.Second

// maxCommandOutput is what is kept of the program's output: a key in any
// of its spellings is far shorter, and a runaway program can't fill memory.
const maxCommandOutput = 4096

// RunCommand runs a key command (split on spaces; no shell, which a
// FROM-scratch plugin image does not have) and reads the master key from
// its standard output: exactly 32 raw bytes, or 64 hex digits, or the
// standard or URL-safe base64 of 32 bytes (surrounding whitespace ignored).
// Its standard error goes to ours; its output never appears in messages.
//
// The program gets exactly the admin's arguments, which any local user can
// read in the process list, so they are documented as not secret: nothing
// of ours is added to them. It gets no input (stdin is /dev/null) and our
// environment, which holds no secret of ours; that is where, or in a file,
// a credential for a secret manager belongs.
func RunCommand(command string) (*crypto.MasterKey, error) {
	argv := strings.Fields(command)
	if len(argv) == 0 {
		return nil, fmt.Errorf("key command: %w", ErrEmpty)
	}
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	cmd.Stdout = &limitedWriter{w: &out, n: maxCommandOutput}
	// A process the program leaves behind (a background helper) may keep
	// its output open; Wait would wait for that process too, past the
	// timeout. Stop reading shortly after the program exits or is killed.
	cmd.WaitDelay = commandWaitDelay
	err := cmd.Run()
	defer clear(out.Bytes())
	if ctx.Err() != nil {
		return nil, fmt.Errorf("key command %s: %w within %v", argv[0], ErrNoAnswer, CommandTimeout)
	}
	// ErrWaitDelay: the program succeeded and what it printed is read.
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return nil, fmt.Errorf("key command %s: %w", argv[0], err)
	}
	raw, err := DecodeKey(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("key command %s: %w", argv[0], err)
	}
	defer clear(raw)
	return crypto.NewMasterKey(raw)
}

// DecodeKey accepts a key as 32 raw bytes (a newline may follow), 64 hex
// digits or base64. The error never quotes b.
func DecodeKey(b []byte) ([]byte, error) {
	if len(b) == crypto.KeySize || (len(b) == crypto.KeySize+1 && b[crypto.KeySize] == '\n') {
		return append([]byte(nil), b[:crypto.KeySize]...), nil
	}
	s := strings.TrimSpace(string(b))
	if len(s) == 2*crypto.KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == crypto.KeySize {
			return k, nil
		}
	}
	return nil, fmt.Errorf("printed %d bytes: %w", len(b), ErrNotAKey)
}

// limitedWriter keeps the first n bytes and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	q := p
	if len(q) > l.n {
		q = q[:l.n]
	}
	l.n -= len(q)
	l.w.Write(q)
	return len(p), nil
}
