database "db-east" {
  dsn = "postgres://postgres@127.0.0.1/postgres"
}

package "invoicing" {
  source = "file://../packages"

  channel "stable" {
    version = "1.0.0"
  }
}

restart {
  initial_delay = "10m"
  max_delay     = "5m"
  reset_after   = "1ms"
}

merchant "acme" {
  package = "invoicing"
  channel = "stable"
}
