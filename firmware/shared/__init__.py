"""What every part of coalmine shares: one error hierarchy, one CLI guard, one atomic file
writer, one SQLite transaction helper and one subprocess runner.

Each concern lives here exactly once so that the device runtime, the console, the signer and
the build scripts behave the same way on a full disk, a bad input or a failing tool.  The
package ships in the image (the device runtime uses it) and so imports nothing outside the
standard library.
"""
