package daemon

import (
	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
)

// What systemd hears (Type=notify in contrib/systemd/securevol.service):
// READY once the daemon serves (never before reconciliation, or the engine
// started after it would find volumes missing), STOPPING when it starts to
// shut down.
const (
	notifyReady    = sd.SdNotifyReady
	notifyStopping = sd.SdNotifyStopping
)

// notify tells systemd the daemon's state through $NOTIFY_SOCKET; without
// it (not under systemd, or a managed plugin) it does nothing.
func notify(log *logrus.Entry, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		log.WithError(err).Warn("telling systemd " + state)
	}
}
