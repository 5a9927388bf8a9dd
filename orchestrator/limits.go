package orchestrator

import "fmt"

// Limits are etcd's request limits, as the etcd server is configured. Every
// transaction Soloist builds from user data is cut to fit them (see the
// package documentation), so they must not be larger than the server's.
type Limits struct {
	// RequestBytes is etcd's --max-request-bytes. Defaults to 1.5 MiB,
	// etcd's default.
	RequestBytes int
	// TxnOps is etcd's --max-txn-ops. Defaults to 128, etcd's default.
	TxnOps int
}

// Defaults of etcd's own limits.
const (
	DefaultRequestBytes = 1536 << 10
	DefaultTxnOps       = 128
)

// requestOverhead is what a transaction may need beyond its payloads: keys,
// compares, the control record, framing. Payload limits leave it free.
const requestOverhead = 32 << 10

// inlineMax is the largest payload a history event carries inline; a
// larger one is written once as a blob before the commit that refers to it.
const inlineMax = 16 << 10

func (l Limits) withDefaults() Limits {
	if l.RequestBytes <= 0 {
		l.RequestBytes = DefaultRequestBytes
	}
	if l.TxnOps <= 0 {
		l.TxnOps = DefaultTxnOps
	}
	return l
}

// budget is the most payload bytes one transaction may carry.
func (l Limits) budget() int { return l.RequestBytes - requestOverhead }

// finalBytes is what a final write carries besides its history: the
// output, its copy in a parent's inbox (up to subResultInline), and failure
// details.
func finalBytes(output int) int { return output + min(output, subResultInline) + 2*maxFailureBytes }

// MaxPayloadFor is the largest --max-payload that fits etcd's request limit:
// a start writes the input together with the control record in one
// transaction, and a final write the output (with its copy for a parent
// and the failure details) in one transaction.
func MaxPayloadFor(l Limits) int {
	return l.withDefaults().budget() - requestOverhead - finalBytes(0) - subResultInline
}

// CheckLimits returns an error that says what to change if payloads of
// maxPayload bytes cannot fit etcd's request limit, or the limits are too
// small to be etcd's.
func CheckLimits(maxPayload int, l Limits) error {
	l = l.withDefaults()
	if l.TxnOps < 16 {
		return fmt.Errorf("etcd's --max-txn-ops of %d is too small for Soloist; use etcd's default of 128 or more", l.TxnOps)
	}
	if l.RequestBytes < 256<<10 {
		return fmt.Errorf("etcd's --max-request-bytes of %d is too small for Soloist; use etcd's default of 1.5 MiB or more", l.RequestBytes)
	}
	if limit := MaxPayloadFor(l); maxPayload > limit {
		return fmt.Errorf("--max-payload %d bytes cannot fit etcd's request limit of %d bytes (--etcd-max-request-bytes, etcd's --max-request-bytes): "+
			"the largest payload that fits is %d bytes; lower --max-payload, or raise etcd's --max-request-bytes and --etcd-max-request-bytes together",
			maxPayload, l.RequestBytes, limit)
	}
	return nil
}
