package cryptfs

import (
	"bytes"
	"encoding/binary"
	"os"
	"syscall"
	"testing"

	"github.com/securevol/securevol/crypto"
)

// redoRecord builds the record replaceBlocks appends (recover.go) for one
// block, from its description rather than from the code.
func redoRecord(sealed []byte, block uint64, final int64) []byte {
	rec := append([]byte(nil), sealed...)
	rec = append(rec, "svREDO\x00\x01"...)
	rec = binary.BigEndian.AppendUint64(rec, uint64(final))
	rec = binary.BigEndian.AppendUint64(rec, block)
	rec = binary.BigEndian.AppendUint64(rec, 0)
	rec = binary.BigEndian.AppendUint16(rec, uint16(len(sealed)))
	return binary.BigEndian.AppendUint16(rec, 0)
}

// Each state an interrupted operation can leave, made by hand in the
// backing file, is repaired on the next mount: what was fsynced reads back,
// the operation is complete or not done, and the repair is logged. States
// no interruption leaves are not "repaired".
func TestRepairInterruptedStates(t *testing.T) {
	m := newTestMount(t)
	content := pattern(1, 2*4096+1000)
	aligned := pattern(2, 2*4096)
	short := content[:4096+500] // a truncation to mid-block 1
	cases := []struct {
		name   string
		before []byte
		patch  func(b []byte, fc *crypto.FileCipher) []byte
		want   []byte // nil: EIO
		logged string
	}{
		{"truncate, killed after the in-place write", content, func(b []byte, fc *crypto.FileCipher) []byte {
			n := fc.SealBlock(nil, short[4096:], 1)
			end := int64(len(b))
			copy(b[crypto.BlockOffset(1):], n)
			return append(b[:end], redoRecord(n, 1, crypto.BlockOffset(1)+int64(len(n)))...)
		}, short, "redo record"},
		{"truncate, killed after the record", content, func(b []byte, fc *crypto.FileCipher) []byte {
			n := fc.SealBlock(nil, short[4096:], 1)
			return append(b, redoRecord(n, 1, crypto.BlockOffset(1)+int64(len(n)))...)
		}, short, "redo record"},
		{"extension, record torn", content, func(b []byte, fc *crypto.FileCipher) []byte {
			for len(b)%4096 != 0 {
				b = append(b, 0x5a)
			}
			return b
		}, content, "complete version"},
		{"append past a full block, torn", aligned, func(b []byte, fc *crypto.FileCipher) []byte {
			b = append(b, fc.SealBlock(nil, make([]byte, 4096), 2)...)
			return b[:len(b)/4096*4096]
		}, aligned, "incomplete last block"},
		{"record that does not authenticate", content, func(b []byte, fc *crypto.FileCipher) []byte {
			n := fc.SealBlock(nil, short[4096:], 1)
			n[40] ^= 1
			return append(b, redoRecord(n, 1, crypto.BlockOffset(1)+int64(len(n)))...)
		}, nil, ""},
		{"last block damaged, not a torn size", content, func(b []byte, fc *crypto.FileCipher) []byte {
			b[len(b)-5] ^= 1
			return b
		}, nil, ""},
	}
	back := make([]string, len(cases))
	for i, tc := range cases {
		p := m.path(string(rune('a' + i)))
		if err := os.WriteFile(p, tc.before, 0o644); err != nil {
			t.Fatal(err)
		}
		back[i] = m.backingOf(string(rune('a' + i)))
	}
	m.offline(func() {
		for i, tc := range cases {
			patchFile(t, back[i], func(b []byte) []byte {
				fc, err := m.keys.FileCipher(b[2:crypto.FileHeaderSize])
				if err != nil {
					t.Fatal(err)
				}
				return tc.patch(b, fc)
			})
		}
	})
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stored, _ := os.Stat(back[i])
			got, err := os.ReadFile(m.path(string(rune('a' + i))))
			if tc.want == nil {
				if !isErrno(err, syscall.EIO) {
					t.Errorf("read %d bytes, %v; want EIO", len(got), err)
				}
				if now, _ := os.Stat(back[i]); now.Size() != stored.Size() {
					t.Errorf("backing file changed from %d to %d bytes", stored.Size(), now.Size())
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Errorf("read %d bytes, %v; want the %d bytes of the repaired file", len(got), err, len(tc.want))
			}
			if now, _ := os.Stat(back[i]); now.Size() != int64(crypto.CipherSize(uint64(len(tc.want)))) {
				t.Errorf("backing file is %d bytes, want %d", now.Size(), crypto.CipherSize(uint64(len(tc.want))))
			}
			if len(m.loggedContaining(tc.logged)) == 0 {
				t.Errorf("no log line with %q", tc.logged)
			}
		})
	}
}

// An appender that comes first to a file left with a redo record (a log
// reopened after the daemon was killed) appends at the repaired end, not
// at the larger size the kernel saw before the repair. (Readers need no
// help: the kernel takes a short read as the new size.)
func TestAppendAfterInterruptedTruncate(t *testing.T) {
	m := newTestMount(t)
	content := pattern(3, 2*4096+1000)
	short := content[:4096+500]
	if err := os.WriteFile(m.path("log"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	back := m.backingOf("log")
	m.offline(func() {
		patchFile(t, back, func(b []byte) []byte {
			fc, err := m.keys.FileCipher(b[2:crypto.FileHeaderSize])
			if err != nil {
				t.Fatal(err)
			}
			n := fc.SealBlock(nil, short[4096:], 1)
			return append(b, redoRecord(n, 1, crypto.BlockOffset(1)+int64(len(n)))...)
		})
	})
	f, err := os.OpenFile(m.path("log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("next line\n")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := append(append([]byte(nil), short...), "next line\n"...)
	got, err := os.ReadFile(m.path("log"))
	if err != nil || !bytes.HasPrefix(got, want) {
		t.Fatalf("after an append: %d bytes, %v; want the repaired %d bytes and the line (no gap)", len(got), err, len(short))
	}
	m.remount() // what is on disk, without the kernel's cached size
	if got, err := os.ReadFile(m.path("log")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after remount: %d bytes, %v; want %d", len(got), err, len(want))
	}
}
