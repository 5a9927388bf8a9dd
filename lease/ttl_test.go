package lease_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/lease/leasetest"
)

func TestTimeToLive(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	s := newSession(t, cli, 3*time.Second)
	id := fmt.Sprintf("%016x", int64(s.LeaseID()))
	left, granted, err := lease.TimeToLive(ctxT(t), cli, id)
	if err != nil {
		t.Fatalf("TimeToLive of a live session's lease: %v", err)
	}
	if granted != 3*time.Second || left <= 0 || left > granted {
		t.Fatalf("TimeToLive = %v left of %v granted; want 0 < left <= 3s granted", left, granted)
	}
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, err := lease.TimeToLive(ctxT(t), cli, id); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("TimeToLive of a revoked lease: %v, want ErrLeaseNotFound", err)
	}
	for _, bad := range []string{"", "xyz", "0"} {
		if _, _, err := lease.TimeToLive(ctxT(t), cli, bad); err == nil || errors.Is(err, lease.ErrLeaseNotFound) {
			t.Errorf("TimeToLive(%q) = %v, want a usage error", bad, err)
		}
	}
}
