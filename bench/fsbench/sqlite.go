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
)

// The SQLite rows: Debian's sqlite3 shell on a database in the
// filesystem, WAL journal, synchronous=FULL (every commit fsyncs the WAL).
// The tables are pgbench's, at scale sqliteScale; a transaction updates an
// account, a teller and a branch and inserts a history row, as pgbench's
// TPC-B-like script does.
const (
	sqliteScale    = 5
	sqliteAccounts = sqliteScale * 100000
	sqliteTellers  = sqliteScale * 10
)

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

// sqliteLoadSQL creates and fills the tables in one transaction and
// checkpoints the WAL into the database file, so the load is on disk
// when it ends.
func sqliteLoadSQL() string {
	return fmt.Sprintf(`PRAGMA journal_mode=WAL;
PRAGMA synchronous=FULL;
CREATE TABLE branches(bid INTEGER PRIMARY KEY, bbalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE tellers(tid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, tbalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE accounts(aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, abalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE history(tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, mtime TEXT, filler TEXT);
BEGIN;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < %[1]d)
  INSERT INTO branches SELECT i, 0, printf('%%-88s', '') FROM c;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < %[2]d)
  INSERT INTO tellers SELECT i, (i-1)/10+1, 0, printf('%%-84s', '') FROM c;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < %[3]d)
  INSERT INTO accounts SELECT i, (i-1)/100000+1, 0, printf('%%-84s', '') FROM c;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
`, sqliteScale, sqliteTellers, sqliteAccounts)
}

func timedSqliteLoad(e *env) (float64, error) {
	t0 := time.Now()
	if _, err := sqlite(e, e.sqlite.db, sqliteLoadSQL()); err != nil {
		return 0, err
	}
	return time.Since(t0).Seconds(), nil
}

func checkSqliteLoad(e *env) error {
	out, err := sqlite(e, e.sqlite.db, "SELECT (SELECT count(*) FROM branches), (SELECT count(*) FROM tellers), (SELECT count(*) FROM accounts);")
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("%d|%d|%d", sqliteScale, sqliteTellers, sqliteAccounts); out != want {
		return fmt.Errorf("after the load: branches|tellers|accounts = %s, want %s", out, want)
	}
	return nil
}

// sqliteTxn is one TPC-B-like transaction; the SELECT after COMMIT is the
// acknowledgement the driver waits for.
func sqliteTxn(i int, aid, tid, bid int, delta int64) string {
	return fmt.Sprintf("BEGIN;"+
		"UPDATE accounts SET abalance = abalance + %[5]d WHERE aid = %[2]d;"+
		"SELECT abalance FROM accounts WHERE aid = %[2]d;"+
		"UPDATE tellers SET tbalance = tbalance + %[5]d WHERE tid = %[3]d;"+
		"UPDATE branches SET bbalance = bbalance + %[5]d WHERE bid = %[4]d;"+
		"INSERT INTO history(tid, bid, aid, delta, mtime) VALUES (%[3]d, %[4]d, %[2]d, %[5]d, CURRENT_TIMESTAMP);"+
		"COMMIT;SELECT 'done %[1]d';\n", i, aid, tid, bid, delta)
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
	// synchronous is per connection; the journal mode is in the file.
	if _, err := io.WriteString(in, "PRAGMA synchronous=FULL; SELECT 'done 0';\n"); err != nil {
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
		aid := rng.IntN(sqliteAccounts) + 1
		tid := rng.IntN(sqliteTellers) + 1
		bid := rng.IntN(sqliteScale) + 1
		delta := int64(rng.IntN(10001) - 5000)
		if _, err := io.WriteString(in, sqliteTxn(i, aid, tid, bid, delta)); err != nil {
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
	out, err := sqlite(e, run.db, `PRAGMA integrity_check;
SELECT (SELECT count(*) FROM history), (SELECT coalesce(sum(delta), 0) FROM history),
  (SELECT sum(abalance) FROM accounts), (SELECT sum(tbalance) FROM tellers), (SELECT sum(bbalance) FROM branches);`)
	if err != nil {
		return err
	}
	d := strconv.FormatInt(run.delta, 10)
	want := fmt.Sprintf("ok\n%d|%s|%s|%s|%s", run.n, d, d, d, d)
	if out != want {
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
