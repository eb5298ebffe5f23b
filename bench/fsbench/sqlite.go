package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/securevol/securevol/internal/benchwork"
)

// The SQLite rows: benchwork's TPC-B-like workload (WAL,
// synchronous=FULL) on a database in the filesystem.
type sqliteRun struct {
	db    string
	n     int   // transactions committed by the timed run
	delta int64 // their deltas' sum: what every balance column must add up to
}

func prepSqlite(e *env) error {
	dir := filepath.Join(e.root, fmt.Sprintf("sqlite-%d", e.round))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	e.cleanups = append(e.cleanups, func() { os.RemoveAll(dir) })
	e.sqlite = &sqliteRun{db: filepath.Join(dir, "bench.db")}
	return nil
}

func timedSqliteLoad(e *env) (float64, error) {
	t0 := time.Now()
	if _, err := sqlite(e, e.sqlite.db, benchwork.SQLiteLoadSQL()); err != nil {
		return 0, err
	}
	return time.Since(t0).Seconds(), nil
}

func checkSqliteLoad(e *env) error {
	out, err := sqlite(e, e.sqlite.db, "SELECT (SELECT count(*) FROM branches), (SELECT count(*) FROM tellers), (SELECT count(*) FROM accounts);")
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("%d|%d|%d", benchwork.SQLiteScale, benchwork.SQLiteTellers, benchwork.SQLiteAccounts); out != want {
		return fmt.Errorf("after the load: branches|tellers|accounts = %s, want %s", out, want)
	}
	return nil
}

// timedSqlite drives one sqlite3 shell in lock step: a transaction, then
// wait for its acknowledgement, until e.duration has passed. The rate is
// committed transactions per second of that time.
func timedSqlite(e *env) (float64, error) {
	cmd := exec.CommandContext(e.ctx, "sqlite3", "-bail", e.sqlite.db)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("sqlite3: %w", err)
	}
	out := bufio.NewReader(outPipe)
	fail := func(err error) (float64, error) {
		in.Close()
		cmd.Wait()
		if e.ctx.Err() != nil {
			return 0, e.ctx.Err()
		}
		return 0, fmt.Errorf("sqlite3: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if _, err := io.WriteString(in, benchwork.SQLiteSession+"SELECT 'done 0';\n"); err != nil {
		return fail(err)
	}
	if err := awaitAck(out, 0); err != nil {
		return fail(err)
	}
	rng := rand.New(rand.NewPCG(uint64(e.round), 8))
	run := e.sqlite
	t0 := time.Now()
	for time.Since(t0) < e.duration {
		i := run.n + 1
		txn, delta := benchwork.SQLiteRandTxn(rng, i)
		if _, err := io.WriteString(in, txn); err != nil {
			return fail(err)
		}
		if err := awaitAck(out, i); err != nil {
			return fail(err)
		}
		run.n, run.delta = i, run.delta+delta
	}
	d := time.Since(t0).Seconds()
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fail(err)
	}
	return float64(run.n) / d, nil
}

// awaitAck reads the shell's output up to transaction i's "done i" line
// (the SELECT of the balance prints a line first).
func awaitAck(out *bufio.Reader, i int) error {
	want := "done " + strconv.Itoa(i)
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			return fmt.Errorf("waiting for transaction %d: %w", i, err)
		}
		if strings.TrimSpace(line) == want {
			return nil
		}
	}
}

// checkSqlite reopens the database from a cold cache: it must be intact,
// hold one history row per acknowledged transaction, and every balance
// column must sum to the deltas the driver sent.
func checkSqlite(e *env) error {
	if err := dropCaches(); err != nil {
		return err
	}
	run := e.sqlite
	out, err := sqlite(e, run.db, benchwork.SQLiteCheckSQL)
	if err != nil {
		return err
	}
	if want := benchwork.SQLiteCheckWant(run.n, run.delta); out != want {
		return fmt.Errorf("after %d transactions (delta sum %d): got %q, want %q (integrity; history rows|deltas|accounts|tellers|branches)", run.n, run.delta, out, want)
	}
	return os.RemoveAll(filepath.Dir(run.db))
}

// sqlite runs a script in a fresh sqlite3 shell and returns its output.
func sqlite(e *env, db, script string) (string, error) {
	cmd := exec.CommandContext(e.ctx, "sqlite3", "-bail", db)
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if e.ctx.Err() != nil {
		return "", e.ctx.Err()
	}
	if err != nil {
		return "", fmt.Errorf("sqlite3: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		return "", fmt.Errorf("sqlite3: %s", s)
	}
	return strings.TrimSpace(string(out)), nil
}
