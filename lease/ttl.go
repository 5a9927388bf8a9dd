package lease

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrLeaseNotFound means etcd knows no lease of that ID: it expired or was
// revoked, and every key attached to it (a node key, owners keys) is gone.
var ErrLeaseNotFound = errors.New("lease: no such lease (expired or revoked)")

// TimeToLive asks etcd how long the lease id (as etcdctl prints it: hex
// digits) has left before it expires unless renewed, and its granted TTL.
// A live session's lease is renewed every TTL/3, so its time to live moves
// between about 2/3 of the TTL and the TTL; one that falls further says the
// holder's keepalives are not getting through. ErrLeaseNotFound means the
// lease has ended.
func TimeToLive(ctx context.Context, cli *clientv3.Client, id string) (left, granted time.Duration, err error) {
	n, err := strconv.ParseUint(id, 16, 64)
	if err != nil || n == 0 {
		return 0, 0, fmt.Errorf("lease: lease ID %q is not a hex number as etcdctl prints it, e.g. 694d7f2e1b3c0a05", id)
	}
	resp, err := cli.TimeToLive(ctx, clientv3.LeaseID(int64(n)))
	if err != nil {
		return 0, 0, fmt.Errorf("lease: time to live of %s: %w", id, err)
	}
	if resp.TTL < 0 {
		return 0, 0, ErrLeaseNotFound
	}
	return time.Duration(resp.TTL) * time.Second, time.Duration(resp.GrantedTTL) * time.Second, nil
}
