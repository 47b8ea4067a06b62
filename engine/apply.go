package engine

import (
	"context"
	"errors"
	"sort"
	"sync"

	"steward/reconcile"
)

// ApplyResult is what an apply did.
type ApplyResult struct {
	// Failed maps each merchant whose action failed to its error.
	Failed map[string]error
	// Skipped lists merchants whose version change a halted rollout
	// skipped.
	Skipped []string
	// Held lists merchants left as they are for now, with why.
	Held map[string]string
}

// OK reports whether every action succeeded.
func (r ApplyResult) OK() bool { return len(r.Failed) == 0 && len(r.Skipped) == 0 }

// Apply carries out a plan: deletes and stops first, then creates, starts,
// restarts and holds, then version changes wave by wave (a wave starts
// when the one before it is done; the rollout gate is asked again before
// each change, so a rollout that halts skips the rest), at most parallel
// actions at a time. Every action is recorded with its reason and result.
func (e *Engine) Apply(ctx context.Context, d Desired, p *reconcile.Plan, hooks Hooks, parallel int) ApplyResult {
	e.init()
	if hooks == nil {
		hooks = NopHooks{}
	}
	parallel = max(parallel, 1)
	res := ApplyResult{Failed: map[string]error{}, Held: map[string]string{}}
	var first, rest []reconcile.Action
	waves := map[int][]reconcile.Action{}
	maxWave := -1
	for _, a := range p.Actions {
		switch {
		case a.Kind == reconcile.Delete || a.Kind == reconcile.Stop:
			first = append(first, a)
		case a.Kind.IsVersionChange() && a.Rollout != "":
			waves[a.Wave] = append(waves[a.Wave], a)
			maxWave = max(maxWave, a.Wave)
		default:
			rest = append(rest, a)
		}
	}
	batches := [][]reconcile.Action{first, rest}
	for w := 0; w <= maxWave; w++ {
		batches = append(batches, waves[w])
	}
	var mu sync.Mutex
	for _, batch := range batches {
		sem := make(chan struct{}, parallel)
		var wg sync.WaitGroup
		for _, a := range batch {
			if ctx.Err() != nil {
				break
			}
			if a.Kind == reconcile.Hold {
				e.Execute(ctx, d, a, "", hooks)
				res.Held[a.Merchant] = a.Reason
				continue
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				err := e.Execute(ctx, d, a, "", hooks)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.Is(err, ErrHalted):
					res.Skipped = append(res.Skipped, a.Merchant)
				case err != nil:
					res.Failed[a.Merchant] = err
				}
			})
		}
		wg.Wait()
	}
	sort.Strings(res.Skipped)
	e.FlushEvents(ctx)
	return res
}
