package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// envName is the variable a flag reads: SOLOIST_ plus the flag's name in
// upper case with - turned into _.
func envName(flagName string) string {
	return "SOLOIST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets every flag of fs named in names (all flags if names is
// empty) from its SOLOIST_* variable, if that is set and not empty. Call it
// before parsing the command line, so that a flag beats its variable.
func applyEnv(fs *flag.FlagSet, e env, names ...string) error {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || (len(want) > 0 && !want[f.Name]) {
			return
		}
		name := envName(f.Name)
		v := e.getenv(name)
		if v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("invalid %s=%q: %v", name, v, serr)
		}
	})
	return err
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments ("soloist start Fn id --input {}"), and returns the
// positional ones. Everything after a standalone "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// setUsage makes fs print its flags GNU style (--name) under a synopsis,
// with the environment variable of each flag in envFlags.
func setUsage(fs *flag.FlagSet, w io.Writer, synopsis string, envFlags map[string]bool) {
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "Usage: %s\n\nFlags:\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			typ, usage := flag.UnquoteUsage(f)
			line := "  --" + f.Name
			if typ != "" {
				line += " " + typ
			}
			fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			if envFlags == nil || envFlags[f.Name] {
				fmt.Fprintf(w, " [$%s]", envName(f.Name))
			}
			fmt.Fprintln(w)
		})
	}
}

// byteSize is a flag of a size in bytes: a plain number or one with a
// suffix KiB, MiB, GiB (or KB, MB, GB, K, M, G, all powers of 1024).
type byteSize int64

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
	t := strings.TrimSpace(s)
	mult := int64(1)
	upper := strings.ToUpper(t)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(upper, u.suffix) {
			mult, t = u.mult, strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return fmt.Errorf("%q is not a size; use bytes or a number with KiB or MiB, e.g. 256KiB", s)
	}
	*b = byteSize(n * mult)
	return nil
}
