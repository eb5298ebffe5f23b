// Package logging builds the logger of securevol's commands: info and
// debug lines go to one writer (stdout), warnings and errors to another
// (stderr). The engine records a managed plugin's stdout at level info and
// its stderr at level error, so this split keeps the levels visible in the
// engine's log. The journal gives both streams the unit's one priority, so
// under systemd (Options.Journal) each line starts with its syslog
// priority, <N>, which journald reads (SyslogLevelPrefix=, on by default).
//
// The field names every package uses for the same facts are here too, so
// a volume is "volume" in every line, whoever logs it.
package logging

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/writer"
)

// Field names shared by every log line about the same thing.
const (
	FieldVolume  = "volume"   // a volume's name
	FieldMountID = "mount_id" // the engine's ID of one Mount (a container)
	FieldOp      = "op"       // the request or admin call being served
)

// Sentinels for a bad Options value.
var (
	ErrLevel  = errors.New("unknown log level (want debug, info, warn or error)")
	ErrFormat = errors.New("unknown log format (want text or json)")
)

// Options says how to log.
type Options struct {
	Level  string    // debug, info, warn or error; "" is info
	Format string    // text or json; "" is text
	Out    io.Writer // debug and info lines
	Err    io.Writer // warnings, errors and worse
	// Journal prefixes each line with its syslog priority for journald;
	// set it when JOURNAL_STREAM says the output goes to the journal.
	Journal bool
}

// prioritized prefixes each line with its syslog priority (sd-daemon(3)).
type prioritized struct{ logrus.Formatter }

func (p prioritized) Format(e *logrus.Entry) ([]byte, error) {
	b, err := p.Formatter.Format(e)
	if err != nil {
		return nil, err
	}
	return append([]byte(fmt.Sprintf("<%d>", syslogPriority(e.Level))), b...), nil
}

// syslogPriority maps a logrus level to syslog's: err 3, warning 4, info
// 6, debug 7.
func syslogPriority(l logrus.Level) int {
	switch l {
	case logrus.PanicLevel, logrus.FatalLevel:
		return 2
	case logrus.ErrorLevel:
		return 3
	case logrus.WarnLevel:
		return 4
	case logrus.InfoLevel:
		return 6
	}
	return 7
}

// New returns a logger writing as o says.
func New(o Options) (*logrus.Entry, error) {
	l := logrus.New()
	if o.Level == "" {
		o.Level = "info"
	}
	lvl, err := logrus.ParseLevel(o.Level)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", o.Level, ErrLevel)
	}
	l.SetLevel(lvl)
	switch o.Format {
	case "", "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano, DisableColors: true})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	default:
		return nil, fmt.Errorf("%q: %w", o.Format, ErrFormat)
	}
	if o.Journal {
		l.SetFormatter(prioritized{l.Formatter})
	}
	// The hooks write every line; the logger's own output would repeat it.
	l.SetOutput(io.Discard)
	l.AddHook(&writer.Hook{Writer: o.Err, LogLevels: []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}})
	l.AddHook(&writer.Hook{Writer: o.Out, LogLevels: []logrus.Level{logrus.InfoLevel, logrus.DebugLevel, logrus.TraceLevel}})
	return logrus.NewEntry(l), nil
}
