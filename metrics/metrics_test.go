package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsExposition(t *testing.T) {
	m := New()
	m.ActionDone("restart", 20*time.Millisecond, nil)
	m.ActionDone("upgrade", time.Second, errors.New("gate"))
	m.ProcessExited("acme")
	m.SourceLoaded("abc123", nil)
	m.SourceLoaded("", errors.New("bad spec"))
	m.DatabaseUp("db-east", false)
	m.MerchantStates(func() map[string]int { return map[string]int{"running": 5, "crashloop": 1} })
	expected := `
# HELP steward_apply_failures_total Actions that failed, by action kind.
# TYPE steward_apply_failures_total counter
steward_apply_failures_total{action="upgrade"} 1
# HELP steward_database_up Whether a database server is reachable (1) or not (0).
# TYPE steward_database_up gauge
steward_database_up{database="db-east"} 0
# HELP steward_merchants Merchants by state.
# TYPE steward_merchants gauge
steward_merchants{state="crashloop"} 1
steward_merchants{state="running"} 5
# HELP steward_source_errors_total Spec loads that failed (parse or validation errors, fetch errors); the last good state stayed in force.
# TYPE steward_source_errors_total counter
steward_source_errors_total 1
# HELP steward_source_revision_info The spec revision in force (value 1).
# TYPE steward_source_revision_info gauge
steward_source_revision_info{revision="abc123"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(expected),
		"steward_apply_failures_total", "steward_database_up", "steward_merchants", "steward_source_errors_total", "steward_source_revision_info"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.reconciles); n != 2 {
		t.Errorf("reconcile histogram series = %d, want 2", n)
	}
}
