database "db-east" {
  dsn = "postgres://postgres@127.0.0.1/postgres"
}

package "invoicing" {
  source = "file://../packages"

  channel "stable" {
    version = "1.0.0"
  }
}

# STEWARD_TEST_100K holds 100,000 bytes (set by the test): twice that is
# more than one environment string may hold.
merchant "acme" {
  package = "invoicing"
  channel = "stable"
  env = {
    BIG = "${env("STEWARD_TEST_100K")}${env("STEWARD_TEST_100K")}"
  }
}
