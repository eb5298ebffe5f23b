package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"strings"
	"testing"
)

// The key command line is documented as not secret, yet an admin may put a
// token in it anyway; `serve -h` must not print it from the environment.
func TestServeHelpHidesKeyCommand(t *testing.T) {
	const secret = "s3cr3t-token-value"
	t.Setenv("SECUREVOL_KEY_COMMAND", "/bin/getkey --token "+secret)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	_, perr := parseServe([]string{"-h"})
	os.Stderr = old
	w.Close()
	out, _ := io.ReadAll(r)
	if !errors.Is(perr, flag.ErrHelp) {
		t.Fatalf("parseServe(-h) = %v", perr)
	}
	if !strings.Contains(string(out), "key-command") {
		t.Fatalf("no usage printed: %s", out)
	}
	if strings.Contains(string(out), secret) {
		t.Fatalf("usage shows the key command from the environment:\n%s", out)
	}
	// The variable still takes effect.
	c, err := parseServe(nil)
	if err != nil || !strings.Contains(c.keyCommand, secret) {
		t.Fatalf("SECUREVOL_KEY_COMMAND ignored: %+v %v", c, err)
	}
}
