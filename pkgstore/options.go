package pkgstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"steward/spec"
	"time"
)

// Defaults of Options.
const (
	// DefaultPackageSize is the largest tarball accepted: 1 GiB.
	DefaultPackageSize int64 = 1 << 30
	// DefaultMaxFiles is the most entries one archive may hold.
	DefaultMaxFiles = 100_000
	// DefaultMaxBytes is the most file data one archive may unpack to:
	// 1 GiB.
	DefaultMaxBytes int64 = 1 << 30
	// DefaultTimeout bounds each stage of reading one package (see
	// Options.Timeout). It leaves room for a download bounded by
	// DefaultHTTPTimeout and its unpacking.
	DefaultTimeout = 15 * time.Minute
)

// Options tune a Store. Zero fields take the defaults.
type Options struct {
	// PackageSize is the largest tarball accepted, in bytes as stored
	// (compressed). A local tarball larger than that is refused before it
	// is read, a download is cut off beyond it; either is a bad package
	// naming the limit. Default DefaultPackageSize.
	PackageSize int64
	// MaxFiles bounds the entries (of any kind) of one archive; default
	// DefaultMaxFiles.
	MaxFiles int
	// MaxBytes bounds the total size of the regular files of one archive;
	// default DefaultMaxBytes. The decompressed stream as a whole (file
	// data, tar headers, padding, anything after the end of the archive)
	// may not exceed MaxBytes plus 8 KiB per entry allowed plus 1 MiB.
	MaxBytes int64
	// Timeout bounds, each on its own, the stages of an Install that read
	// a package: checking a local tarball against its digest before
	// anything is written, and, once the version's lock is held, fetching
	// the digest and downloading (HTTP sources) and unpacking. A stage
	// that takes longer fails with an error naming the limit and matching
	// context.DeadlineExceeded (not ErrBadPackage: a slow disk or network
	// may be the cause). Waiting for the lock is bounded by the caller's
	// context only; its holder is bounded by its own Timeout. Default
	// DefaultTimeout.
	Timeout time.Duration
	// HTTPClient fetches from http:// and https:// sources; default
	// NewHTTPClient(DefaultHTTPTimeout). Each request is also bounded by
	// the context of the call making it and by Timeout.
	HTTPClient *http.Client
	// Manifest bounds package.hcl (size and nesting) before it is parsed;
	// zero fields take spec.DefaultLimits.
	Manifest spec.Limits
}

func (o Options) withDefaults() Options {
	if o.PackageSize <= 0 {
		o.PackageSize = DefaultPackageSize
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.HTTPClient == nil {
		o.HTTPClient = NewHTTPClient(DefaultHTTPTimeout)
	}
	return o
}

func (o Options) limits() limits { return limits{MaxFiles: o.MaxFiles, MaxBytes: o.MaxBytes} }

// stageTimeout is the cause of a stage's context ending at Options.Timeout.
type stageTimeout struct{ limit time.Duration }

func (e *stageTimeout) Error() string {
	return fmt.Sprintf("took longer than the limit of %s (the package store's timeout)", e.limit)
}

func (*stageTimeout) Unwrap() error { return context.DeadlineExceeded }

// bounded runs f with ctx bounded by the store's Timeout. When f fails
// because that deadline passed (and not because ctx ended), the error says
// what took too long and names the limit.
func (s *Store) bounded(ctx context.Context, what string, f func(ctx context.Context) error) error {
	cause := &stageTimeout{s.opts.Timeout}
	tctx, cancel := context.WithTimeoutCause(ctx, s.opts.Timeout, cause)
	defer cancel()
	err := f(tctx)
	if err != nil && ctx.Err() == nil && context.Cause(tctx) == cause && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %w", what, cause)
	}
	return err
}
