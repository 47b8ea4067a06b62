package source

import (
	"context"
	"log/slog"
	"time"

	"steward/spec"
)

// Snapshot is one consistent read of the specs.
type Snapshot struct {
	// Revision identifies the content: for git the commit SHA (40 hex
	// digits), for a directory spec.ContentRevision of Sources.
	Revision string
	// Sources are the spec files, sorted by path, never empty.
	Sources []spec.Source
	// Commit describes the commit the sources were read from; nil for a
	// directory.
	Commit *CommitInfo
}

// CommitInfo describes a git commit.
type CommitInfo struct {
	SHA string
	// Author is "Name <email>".
	Author string
	// Subject is the first line of the commit message.
	Subject string
	// Time is the committer's time: when the commit was made as it is.
	Time time.Time
}

// Source is where specs come from.
type Source interface {
	// Load returns the current snapshot (for git: fetch first if due).
	Load(ctx context.Context) (*Snapshot, error)
	// Watch sends on ch, without blocking, whenever the specs may have
	// changed, until ctx ends; then it returns nil. ch should have a buffer
	// of 1 so notifications coalesce.
	Watch(ctx context.Context, ch chan<- struct{}) error
}

var (
	_ Source = (*Dir)(nil)
	_ Source = (*Git)(nil)
)

// notify sends on ch without blocking.
func notify(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
