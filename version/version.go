// Package version holds the build's version, shared by every process in
// the binary (set with -ldflags "-X hearth.dev/hearth/version.Version=…").
package version

// Version is the build's version.
var Version = "dev"
