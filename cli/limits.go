package cli

import (
	"github.com/spf13/pflag"

	"hearth.dev/hearth/serving"
)

// addLimitFlags adds the flags of an HTTP server's timeouts and connection
// limit (see package serving); prefix names which server when a command
// has more than one ("" or "console-").
func addLimitFlags(f *pflag.FlagSet, prefix string, l *serving.Limits) {
	f.DurationVar(&l.ReadTimeout, prefix+"read-timeout", serving.DefaultReadTimeout,
		"longest time to read a request, body included; an upload may take longer while bytes keep coming, but not pause this long")
	f.DurationVar(&l.WriteTimeout, prefix+"write-timeout", serving.DefaultWriteTimeout,
		"longest time to write an answer; watches, logs and downloads may take longer, but no single write")
	f.DurationVar(&l.IdleTimeout, prefix+"idle-timeout", serving.DefaultIdleTimeout, "how long an idle kept-alive connection stays open")
	f.IntVar(&l.MaxConnections, prefix+"max-connections", serving.DefaultMaxConnections,
		"connections open at once; one more gets a 503 and is closed (-1: no limit)")
}
