package keysource

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/internal/ptytest"
)

// On a terminal the passphrase is read without echo; from a pipe it is
// never asked for.
func TestTerminalPrompt(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if Terminal(r, io.Discard) != nil {
		t.Fatal("a pipe counts as a terminal")
	}

	term, tty := ptytest.Open(t)
	var shown bytes.Buffer
	prompt := Terminal(tty, &shown)
	if prompt == nil {
		t.Fatal("a pseudo-terminal does not count as a terminal")
	}
	type answer struct {
		p   []byte
		err error
	}
	done := make(chan answer, 1)
	go func() {
		p, err := prompt("Passphrase")
		done <- answer{p, err}
	}()
	// Type only once the prompt has turned echo off, as a person would
	// after seeing the label; typed earlier, the terminal would echo it.
	waitEchoOff(t, tty)
	if _, err := term.WriteString("s3cret words\n"); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.err != nil || string(got.p) != "s3cret words" {
		t.Fatalf("prompt = %q, %v", got.p, got.err)
	}
	if shown.String() != "Passphrase: \n" {
		t.Errorf("label shown as %q", shown.String())
	}
	// What the terminal shows back (its echo) must not hold the passphrase.
	echo := make(chan string, 1)
	go func() {
		var b strings.Builder
		br := bufio.NewReader(term)
		for {
			c, err := br.ReadByte()
			if err != nil {
				break
			}
			b.WriteByte(c)
		}
		echo <- b.String()
	}()
	tty.Close()
	select {
	case e := <-echo:
		if strings.Contains(e, "s3cret") {
			t.Fatalf("the terminal echoed the passphrase: %q", e)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no end of the terminal's output after closing it")
	}
}

func waitEchoOff(t *testing.T, tty *os.File) {
	t.Helper()
	for i := 0; ; i++ {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			return
		}
		if i > 500 {
			t.Fatal("the prompt never turned echo off")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
