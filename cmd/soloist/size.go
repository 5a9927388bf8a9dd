package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
)

// maxByteSize bounds a byteSize flag.
const maxByteSize = 1 << 40

// byteSize is a flag of a size in bytes, parsed by go-humanize: a number of
// bytes, or one with a unit: KiB, MiB, GiB (powers of 1024) or KB, MB, GB,
// K, M, G (powers of 1000), e.g. 256KiB.
type byteSize int64

// String prints the size in the largest binary unit that divides it, so
// that a default reads as it is written (256KiB).
func (b *byteSize) String() string {
	v := int64(*b)
	switch {
	case v != 0 && v%(1<<30) == 0:
		return strconv.FormatInt(v>>30, 10) + "GiB"
	case v != 0 && v%(1<<20) == 0:
		return strconv.FormatInt(v>>20, 10) + "MiB"
	case v != 0 && v%(1<<10) == 0:
		return strconv.FormatInt(v>>10, 10) + "KiB"
	}
	return strconv.FormatInt(v, 10)
}

func (b *byteSize) Set(s string) error {
	n, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil || n > maxByteSize {
		return fmt.Errorf("%q is not a size; use bytes or a number with KiB or MiB, e.g. 256KiB", s)
	}
	*b = byteSize(n)
	return nil
}

func (b *byteSize) Type() string { return "size" }
