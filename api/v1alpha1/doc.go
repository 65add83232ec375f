// Package v1alpha1 holds Hearth's API types: every kind a lab is described
// with, its defaults and its validation.
//
// The server, the agents, the controllers, the client and the CLI all share
// these types, so a field means the same thing everywhere. Objects are
// written as `apiVersion: hearth.dev/v1alpha1`.
//
// Each kind lives in its own file and registers itself in the Kinds table
// (see registry.go) with its plural name, scope and constructor. A kind's
// spec type implements Defaulter and Validator; validation returns every bad
// field with its path (for example `spec.cidr`), so a person fixes a file in
// one pass.
package v1alpha1
