package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/cryptfs"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/fsck"
	"github.com/securevol/securevol/keyfile"
)

// keyFlags are the two ways to name a master key on the command line.
type keyFlags struct {
	keyFile, passFile string
}

func (k *keyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.keyFile, "key-file", "", "file holding the 32-byte master key (securevol key generate)")
	fs.StringVar(&k.passFile, "passphrase-file", "", "file holding a passphrase (stretched with Argon2id)")
}

func (k *keyFlags) source() (crypto.KeySource, error) {
	switch {
	case k.keyFile != "" && k.passFile != "":
		return nil, fmt.Errorf("%w: give --key-file or --passphrase-file, not both", errUsage)
	case k.keyFile != "":
		mk, err := keyfile.LoadKeyFile(k.keyFile)
		if err != nil {
			return nil, err
		}
		return crypto.StaticKey{Key: mk}, nil
	case k.passFile != "":
		pass, err := keyfile.ReadPassphraseFile(k.passFile)
		if err != nil {
			return nil, err
		}
		return crypto.NewPassphrase(pass, nil)
	}
	return nil, fmt.Errorf("%w: --key-file or --passphrase-file is required", errUsage)
}

// openVolume unwraps the keys of the backing folder dir.
func openVolume(dir string, ks crypto.KeySource) (*crypto.VolumeKeys, error) {
	var keys *crypto.VolumeKeys
	err := backing.WithRoot(dir, func(root *backing.Dir) (err error) {
		_, keys, err = backing.OpenVolume(root, ks)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return keys, nil
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string, nargs int) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != nargs {
		return nil, fmt.Errorf("%w: want %d argument(s), got %d", errUsage, nargs, fs.NArg())
	}
	return fs.Args(), nil
}

// parseKeyed parses a command that takes a master key and nargs
// arguments; register adds the command's other flags.
func parseKeyed(name string, args []string, nargs int, register func(*flag.FlagSet)) (crypto.KeySource, []string, error) {
	fs := newFlagSet(name)
	var k keyFlags
	k.register(fs)
	if register != nil {
		register(fs)
	}
	rest, err := parse(fs, args, nargs)
	if err != nil {
		return nil, nil, err
	}
	ks, err := k.source()
	if err != nil {
		return nil, nil, err
	}
	return ks, rest, nil
}

func runKey(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: key generate FILE | key rotate", errUsage)
	}
	switch args[0] {
	case "generate":
		rest, err := parse(newFlagSet("key generate"), args[1:], 1)
		if err != nil {
			return err
		}
		if err := keyfile.GenerateKeyFile(rest[0]); err != nil {
			return fmt.Errorf("%w (an existing key is never overwritten)", err)
		}
		fmt.Fprintf(os.Stderr, "wrote a new master key to %s (mode 0600): back it up; without it the data cannot be read\n", rest[0])
		return nil
	case "rotate":
		return runKeyRotate(args[1:])
	}
	return fmt.Errorf("%w: unknown key command %q", errUsage, args[0])
}

func runInit(args []string) error {
	ks, rest, err := parseKeyed("init", args, 1, nil)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(rest[0], 0o700); err != nil {
		return err
	}
	var h *crypto.Header
	err = backing.WithRoot(rest[0], func(root *backing.Dir) (err error) {
		h, _, err = backing.InitVolume(root, ks, "", nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("init %s: %w", rest[0], err)
	}
	fmt.Fprintf(os.Stderr, "initialised encrypted directory %s (id %s, format %d)\n", rest[0], h.ID, h.Format)
	return nil
}

func newLogger(debug bool) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	if debug {
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

func runMount(args []string) error {
	var debug, allowOther bool
	var maxWrite int
	ks, rest, err := parseKeyed("mount", args, 2, func(fs *flag.FlagSet) {
		fs.BoolVar(&debug, "debug", false, "log every FUSE request")
		fs.BoolVar(&allowOther, "allow-other", true, "let other users in (with default_permissions)")
		fs.IntVar(&maxWrite, "max-write", 0, "largest FUSE read/write request in bytes, 64 KiB to 1 MiB (default 1 MiB)")
	})
	if err != nil {
		return err
	}
	dir, mnt := rest[0], rest[1]
	if maxWrite != 0 && (maxWrite < 64<<10 || maxWrite > 1<<20 || maxWrite%4096 != 0) {
		return fmt.Errorf("%w: --max-write must be a multiple of 4096 from 65536 to 1048576", errUsage)
	}
	keys, err := openVolume(dir, ks)
	if err != nil {
		return err
	}
	log := newLogger(debug).WithField("dir", dir)
	srv, err := cryptfs.Mount(dir, mnt, keys, cryptfs.Options{
		Log: log, AllowOther: allowOther, FsName: dir, Debug: debug, MaxWrite: maxWrite,
	})
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", dir, mnt, err)
	}
	log.Infof("mounted on %s; SIGINT or SIGTERM unmounts", mnt)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for sig := range sigs {
			log.Infof("%v: unmounting %s", sig, mnt)
			if err := srv.Unmount(); err != nil {
				// Busy (a shell sits in it): detach now, the kernel
				// finishes when the last user leaves.
				log.Warnf("unmount %s: %v; detaching lazily", mnt, err)
				if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
					log.Errorf("lazy unmount %s: %v", mnt, err)
				}
			}
		}
	}()
	srv.Wait()
	return nil
}

func runFsck(args []string) error {
	ks, rest, err := parseKeyed("fsck", args, 1, nil)
	if err != nil {
		return err
	}
	keys, err := openVolume(rest[0], ks)
	if err != nil {
		return err
	}
	rep, err := fsck.Check(rest[0], keys, func(p fsck.Problem) { fmt.Println(p) })
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d directories, %d files, %d symlinks, %d special files, %d blocks checked; %d problems\n",
		rep.Dirs, rep.Files, rep.Symlinks, rep.Specials, rep.Blocks, rep.Problems)
	if rep.Problems > 0 {
		return errors.New("the directory has damaged or tampered entries (listed above)")
	}
	return nil
}
