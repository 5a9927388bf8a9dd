package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is the release, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

// buildInfo is what soloist version prints.
type buildInfo struct {
	Version   string
	Commit    string
	Modified  bool
	GoVersion string
}

func readBuildInfo() buildInfo {
	bi := buildInfo{Version: version, Commit: "unknown", GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		if bi.Version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			bi.Version = info.Main.Version // go install ...@vX.Y.Z
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				bi.Commit = s.Value
			case "vcs.modified":
				bi.Modified = s.Value == "true"
			}
		}
	}
	return bi
}

// versionText is what soloist version and soloist --version print.
func versionText(bi buildInfo) string {
	commit := bi.Commit
	if bi.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("soloist %s\ncommit: %s\ngo: %s %s/%s\n", bi.Version, commit, bi.GoVersion, runtime.GOOS, runtime.GOARCH)
}

func newVersionCommand(bi buildInfo) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print version, commit and Go version",
		Args:  exactArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), versionText(bi))
			return err
		},
	}
}
