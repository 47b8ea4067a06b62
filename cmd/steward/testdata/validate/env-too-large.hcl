database "db-east" {
  dsn = "postgres://postgres@127.0.0.1/postgres"
}

package "invoicing" {
  source = "file://../packages"

  channel "stable" {
    version = "1.0.0"
  }
}

# STEWARD_TEST_100K holds 100,000 bytes (set by the test): each value is
# within the limit of one string, all of them exceed the environment.
merchant "acme" {
  package  = "invoicing"
  channel  = "stable"
  database = "db-east"
  env = {
    A = env("STEWARD_TEST_100K")
    B = env("STEWARD_TEST_100K")
    C = env("STEWARD_TEST_100K")
    D = env("STEWARD_TEST_100K")
    E = env("STEWARD_TEST_100K")
    F = env("STEWARD_TEST_100K")
    G = env("STEWARD_TEST_100K")
    H = env("STEWARD_TEST_100K")
    I = env("STEWARD_TEST_100K")
    J = env("STEWARD_TEST_100K")
    K = env("STEWARD_TEST_100K")
    L = env("STEWARD_TEST_100K")
  }
}
