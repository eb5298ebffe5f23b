package archive

import "io"

// Open checks the layout at dir: structure, every blob's digest and size, the config, the
// stream's total size and every entry in it — without writing anything. Damaged or truncated: an
// error wrapping ErrDamaged.
func Open(dir string) (*Summary, error) {
	l, err := openLayout(dir)
	if err != nil {
		return nil, err
	}
	s, err := l.summary()
	if err != nil {
		return nil, err
	}
	s.Files, err = l.scan(func(*entry, int, io.Reader) error { return nil })
	if err != nil {
		return nil, err
	}
	return s, nil
}

// summary describes l as its config says, reading (and checking) the
// handover.
func (l *layout) summary() (*Summary, error) {
	s := &Summary{Manifest: l.digest.String(), Files: l.cfg.Stream.Entries, Bytes: l.cfg.Stream.Size, Chunks: len(l.chunks), Meta: l.cfg.Volume}
	if l.handover != nil {
		var err error
		if s.Handover, err = readBlob(l.dir, *l.handover, nil); err != nil {
			return nil, err
		}
	}
	return s, nil
}
