// Package packaging is how Hearth gets onto machines: the Debian package
// (debian/, built by deb.sh) and its tests, which build it, check it with
// lintian, install it into a throwaway Debian root made from Debian's
// packages and run it there. The same roots test the README's two
// commands on a machine that has nothing but Go: that `scripts/deps.sh`
// installs what the demo and the tests need, again and after an
// interruption, and that their set-up then succeeds.
package packaging
