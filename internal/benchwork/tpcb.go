package benchwork

import (
	"fmt"
	"math/rand/v2"
)

// The SQLite workload: Debian's sqlite3 shell, WAL journal,
// synchronous=FULL (every commit fsyncs the WAL). The tables are
// pgbench's, at scale SQLiteScale; a transaction updates an account, a
// teller and a branch and inserts a history row, as pgbench's TPC-B-like
// script does.
const (
	SQLiteScale    = 5
	SQLiteAccounts = SQLiteScale * 100000
	SQLiteTellers  = SQLiteScale * 10
)

// SQLiteLoadSQL creates and fills the tables in one transaction and
// checkpoints the WAL into the database file, so the load is on disk
// when it ends.
func SQLiteLoadSQL() string {
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
`, SQLiteScale, SQLiteTellers, SQLiteAccounts)
}

// SQLiteSession is what a connection sets before its transactions:
// synchronous is per connection (the journal mode is in the file).
const SQLiteSession = "PRAGMA synchronous=FULL;\n"

// SQLiteTxn is one TPC-B-like transaction, committed on its own; the
// SELECT after COMMIT prints "done i", an acknowledgement a driver can
// wait for.
func SQLiteTxn(i int, aid, tid, bid int, delta int64) string {
	return fmt.Sprintf("BEGIN;"+
		"UPDATE accounts SET abalance = abalance + %[5]d WHERE aid = %[2]d;"+
		"SELECT abalance FROM accounts WHERE aid = %[2]d;"+
		"UPDATE tellers SET tbalance = tbalance + %[5]d WHERE tid = %[3]d;"+
		"UPDATE branches SET bbalance = bbalance + %[5]d WHERE bid = %[4]d;"+
		"INSERT INTO history(tid, bid, aid, delta, mtime) VALUES (%[3]d, %[4]d, %[2]d, %[5]d, CURRENT_TIMESTAMP);"+
		"COMMIT;SELECT 'done %[1]d';\n", i, aid, tid, bid, delta)
}

// SQLiteRandTxn is transaction i on random rows with a random delta in
// [-5000, 5000], as pgbench picks them; it returns the SQL and the delta.
func SQLiteRandTxn(rng *rand.Rand, i int) (string, int64) {
	aid := rng.IntN(SQLiteAccounts) + 1
	tid := rng.IntN(SQLiteTellers) + 1
	bid := rng.IntN(SQLiteScale) + 1
	delta := int64(rng.IntN(10001) - 5000)
	return SQLiteTxn(i, aid, tid, bid, delta), delta
}

// SQLiteCheckSQL checks a database after transactions: its integrity,
// then one line "history rows|deltas|accounts|tellers|branches" (the sums
// of the balance columns); SQLiteCheckWant is what it must print.
const SQLiteCheckSQL = `PRAGMA integrity_check;
SELECT (SELECT count(*) FROM history), (SELECT coalesce(sum(delta), 0) FROM history),
  (SELECT sum(abalance) FROM accounts), (SELECT sum(tbalance) FROM tellers), (SELECT sum(bbalance) FROM branches);`

// SQLiteCheckWant is SQLiteCheckSQL's output after n committed
// transactions whose deltas sum to delta.
func SQLiteCheckWant(n int, delta int64) string {
	return fmt.Sprintf("ok\n%d|%[2]d|%[2]d|%[2]d|%[2]d", n, delta)
}
