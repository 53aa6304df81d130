// Package bytesize reads and writes byte counts the way Levee's users type
// them: config values, CLI flags and load-test sizes all take the same
// spellings, and print the same way.
package bytesize
