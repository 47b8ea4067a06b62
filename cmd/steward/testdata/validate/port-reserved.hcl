database "db-east" {
  dsn = "postgres://postgres@127.0.0.1/postgres"
}

package "invoicing" {
  source = "file://../packages"

  channel "stable" {
    version = "1.0.0"
  }
}

# 7070 is where the API listens by default (api.listen).
merchant "acme" {
  package = "invoicing"
  channel = "stable"
  port    = 7070
}
