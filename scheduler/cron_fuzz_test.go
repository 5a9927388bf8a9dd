package scheduler_test

import (
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/scheduler"
)

// FuzzParseCron parses arbitrary specs: it never panics, refuses with a
// message that names the spec, and for a spec it accepts, Next is strictly
// after the time it is given, in every time zone, and skips no tick: the
// next tick after one nanosecond before a tick is that tick.
func FuzzParseCron(f *testing.F) {
	for _, s := range []string{"0 2 * * *", "*/15 * * * 1-5", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@every 30s",
		"@every 1h30m", "@every 0s", "@every 1.5s", "@every", "@everyday", "0 0 30 2 *", "0 0 29 2 *", "30 2 * * 0", "* * * * *",
		"", " ", "TZ=UTC 0 0 * * *", "60 * * * *", "0 0 * * 7", "0 0 L * *", "1,2,3-5/2 * * * *", "0 0 1 1 ?"} {
		f.Add(s, int64(1767225600), uint8(0))
	}
	f.Add("30 2 * * *", int64(1774746000), uint8(1)) // a DST change in Berlin
	f.Add("0 1 * * *", int64(1762063200), uint8(2))  // one in New York
	zones := []*time.Location{time.UTC, mustZone(f, "Europe/Berlin"), mustZone(f, "America/New_York"), mustZone(f, "Australia/Lord_Howe")}
	f.Fuzz(func(t *testing.T, spec string, unix int64, zone uint8) {
		c, err := scheduler.ParseCron(spec)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid cron ") {
				t.Fatalf("ParseCron(%q): error %q does not start with 'invalid cron'", spec, err)
			}
			return
		}
		// From 1970 to about 2242.
		at := time.Unix(unix%(1<<33), 0).UTC()
		if at.Before(time.Unix(0, 0)) {
			at = at.Add(1 << 33 * time.Second)
		}
		loc := zones[int(zone)%len(zones)]
		next := c.Next(at, loc)
		if next.IsZero() {
			return // none within five years: allowed (a leap-day spec far from a leap year)
		}
		if !next.After(at) {
			t.Fatalf("%q in %s: Next(%s) = %s, not after it", spec, loc, at, next)
		}
		after := c.Next(next, loc)
		if !after.IsZero() && !after.After(next) {
			t.Fatalf("%q in %s: Next(%s) = %s, not after it", spec, loc, next, after)
		}
		if again := c.Next(next.Add(-time.Nanosecond), loc); !again.Equal(next) {
			t.Fatalf("%q in %s: Next(%s) = %s but Next(%s - 1ns) = %s", spec, loc, at, next, next, again)
		}
	})
}

func mustZone(f *testing.F, name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		f.Fatalf("time zone %s: %v", name, err)
	}
	return loc
}
