package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The PostgreSQL rows: Debian's server with its data directory on the
// filesystem under test (fsync, synchronous_commit and full_page_writes
// at their defaults: on), reached on a unix socket in a temporary folder,
// and loaded and driven by pgbench. PostgreSQL refuses to run as root, so
// the server and its tools run as the postgres user; the mounts let other
// users in (securevol by default, gocryptfs with -allow_other).
const pgScale = 5

// postgres is the installation the rows use and the user they run as.
type postgres struct {
	bin      string // /usr/lib/postgresql/VERSION/bin
	uid, gid uint32
}

// errNoPostgres: the rows cannot run here.
var errNoPostgres = errors.New("PostgreSQL server not found in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql), or leave out the pgload and pgbench workloads")

// findPostgres picks the newest Debian PostgreSQL and the postgres user.
func findPostgres() (*postgres, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	var found []string
	for _, b := range bins {
		if isExecutable(filepath.Join(b, "postgres")) && isExecutable(filepath.Join(b, "pgbench")) {
			found = append(found, b)
		}
	}
	if len(found) == 0 {
		return nil, errNoPostgres
	}
	slices.SortFunc(found, func(a, b string) int { return pgVersion(a) - pgVersion(b) })
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user: uid %q gid %q", u.Uid, u.Gid)
	}
	return &postgres{bin: found[len(found)-1], uid: uint32(uid), gid: uint32(gid)}, nil
}

// pgVersion is the major version in /usr/lib/postgresql/VERSION/bin.
func pgVersion(bin string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return v
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// pgCluster is one round's server.
type pgCluster struct {
	*postgres
	data    string
	sock    string // holds the socket and the server's log
	running bool
	run     pgbenchResult // of the timed pgbench run
}

func prepPg(e *env) error {
	if e.postgres == nil {
		return errNoPostgres
	}
	pg := &pgCluster{postgres: e.postgres}
	e.pg = pg
	// The postgres user must be able to reach the folder (a gocryptfs
	// root takes the cipher folder's 0700).
	if err := os.Chmod(e.root, 0o755); err != nil {
		return err
	}
	dir := filepath.Join(e.root, fmt.Sprintf("pg-%d", e.round))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	e.cleanups = append(e.cleanups, func() { os.RemoveAll(dir) })
	sock, err := os.MkdirTemp("", "fsbench-pg-")
	if err != nil {
		return err
	}
	e.cleanups = append(e.cleanups, func() { os.RemoveAll(sock) })
	for _, d := range []string{dir, sock} {
		if err := os.Chown(d, int(pg.uid), int(pg.gid)); err != nil {
			return err
		}
	}
	pg.data, pg.sock = filepath.Join(dir, "data"), sock
	// initdb's own fsyncs are skipped (-N); the sync below writes it all
	// back before anything is timed.
	if _, err := pg.cmd(e, "initdb", "-N", "-D", pg.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"); err != nil {
		return err
	}
	syscall.Sync()
	if _, err := pg.cmd(e, "pg_ctl", "-D", pg.data, "-l", filepath.Join(sock, "server.log"), "-w", "-t", "120",
		"-o", "-k "+sock+" -c listen_addresses=''", "start"); err != nil {
		return fmt.Errorf("%w; server log: %s", err, pg.logTail())
	}
	pg.running = true
	e.cleanups = append(e.cleanups, func() { pg.stop(e) })
	return nil
}

// stop shuts the server down (fast: rolls back open transactions, then
// a checkpoint), once.
func (pg *pgCluster) stop(e *env) error {
	if !pg.running {
		return nil
	}
	pg.running = false
	_, err := pg.cmd(e, "pg_ctl", "-D", pg.data, "-m", "fast", "-w", "-t", "120", "stop")
	return err
}

func (pg *pgCluster) logTail() string {
	b, _ := os.ReadFile(filepath.Join(pg.sock, "server.log"))
	s := strings.TrimSpace(string(b))
	if len(s) > 1000 {
		s = "..." + s[len(s)-1000:]
	}
	return s
}

// cmd runs one of the installation's programs as the postgres user and
// returns its stdout.
func (pg *pgCluster) cmd(e *env, name string, args ...string) (string, error) {
	// Not CommandContext: a killed pg_ctl would leave the server running;
	// the round's cleanup stops it instead.
	cmd := exec.Command(filepath.Join(pg.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: pg.uid, Gid: pg.gid}}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + pg.bin + ":/usr/bin:/bin", "LC_ALL=C", "PGHOST=" + pg.sock, "PGUSER=postgres", "PGDATABASE=postgres"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, truncate(strings.TrimSpace(stderr.String()), 1000))
	}
	return string(out), nil
}

func (pg *pgCluster) query(e *env, sql string) (string, error) {
	out, err := pg.cmd(e, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)
	return strings.TrimSpace(out), err
}

func timedPgLoad(e *env) (float64, error) {
	t0 := time.Now()
	if _, err := e.pg.cmd(e, "pgbench", "-i", "-q", "-s", strconv.Itoa(pgScale)); err != nil {
		return 0, err
	}
	return time.Since(t0).Seconds(), nil
}

func checkPgLoad(e *env) error {
	out, err := e.pg.query(e, "SELECT (SELECT count(*) FROM pgbench_branches) || '|' || (SELECT count(*) FROM pgbench_accounts)")
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("%d|%d", pgScale, pgScale*100000); out != want {
		return fmt.Errorf("after pgbench -i: branches|accounts = %s, want %s", out, want)
	}
	return nil
}

func timedPgbench(e *env) (float64, error) {
	secs := strconv.Itoa(max(1, int(e.duration.Seconds())))
	out, err := e.pg.cmd(e, "pgbench", "-c", "4", "-j", "2", "-T", secs)
	if err != nil {
		return 0, err
	}
	if e.pg.run, err = parsePgbench(out); err != nil {
		return 0, err
	}
	return e.pg.run.tps, nil
}

// checkPgbench holds pgbench to its own numbers: no failed transactions,
// one history row per processed one, and the TPC-B invariant that
// accounts, tellers, branches and history all sum to the same balance.
// Then it stops the server, so nothing runs behind the next workload.
func checkPgbench(e *env) error {
	pg := e.pg
	if pg.run.failed != 0 {
		return fmt.Errorf("pgbench: %d failed transactions", pg.run.failed)
	}
	out, err := pg.query(e, `SELECT (SELECT count(*) FROM pgbench_history) || '|' ||
		(SELECT coalesce(sum(delta), 0) FROM pgbench_history) || '|' || (SELECT sum(abalance) FROM pgbench_accounts) || '|' ||
		(SELECT sum(tbalance) FROM pgbench_tellers) || '|' || (SELECT sum(bbalance) FROM pgbench_branches)`)
	if err != nil {
		return err
	}
	f := strings.Split(out, "|")
	if len(f) != 5 || f[0] != strconv.Itoa(pg.run.processed) || f[1] != f[2] || f[1] != f[3] || f[1] != f[4] {
		return fmt.Errorf("after %d transactions: history rows|deltas|accounts|tellers|branches = %s", pg.run.processed, out)
	}
	if err := pg.stop(e); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Dir(pg.data))
}

type pgbenchResult struct {
	processed, failed int
	tps               float64
}

var (
	rePgProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	rePgFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	rePgTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
)

// parsePgbench reads pgbench's summary. Older pgbench versions print no
// failed-transactions line; then none failed (they abort instead).
func parsePgbench(out string) (pgbenchResult, error) {
	var r pgbenchResult
	m := rePgProcessed.FindStringSubmatch(out)
	t := rePgTPS.FindStringSubmatch(out)
	if m == nil || t == nil {
		return r, fmt.Errorf("pgbench output without transaction count or tps: %q", truncate(out, 500))
	}
	r.processed, _ = strconv.Atoi(m[1])
	r.tps, _ = strconv.ParseFloat(t[1], 64)
	if f := rePgFailed.FindStringSubmatch(out); f != nil {
		r.failed, _ = strconv.Atoi(f[1])
	}
	if r.processed == 0 || r.tps <= 0 {
		return r, fmt.Errorf("pgbench processed %d transactions at %v tps", r.processed, r.tps)
	}
	return r, nil
}
