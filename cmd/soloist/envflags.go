package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// envAnnotation marks a flag that also reads its SOLOIST_ variable.
const envAnnotation = "soloist_env"

// envName is the variable a flag reads: SOLOIST_ plus the flag's name in
// upper case with - turned into _.
func envName(flagName string) string {
	return "SOLOIST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// withEnv makes the named flags of fs (every flag if none are named) read
// their SOLOIST_ variable, and says so in their help.
func withEnv(fs *pflag.FlagSet, names ...string) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if len(want) > 0 && !want[f.Name] {
			return
		}
		name := envName(f.Name)
		f.Usage += " [$" + name + "]"
		_ = fs.SetAnnotation(f.Name, envAnnotation, []string{name})
	})
}

// bindEnv sets every flag of fs that reads a variable and was not given on
// the command line from its variable, if that is set and not empty: a flag
// beats its variable. A bad value is an error that names the variable.
func bindEnv(fs *pflag.FlagSet, e env) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		names := f.Annotations[envAnnotation]
		if err != nil || len(names) == 0 || f.Changed {
			return
		}
		v := e.getenv(names[0])
		if v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("invalid %s=%q: %v", names[0], v, serr)
		}
	})
	return err
}
