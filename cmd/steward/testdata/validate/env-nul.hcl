database "db-east" {
  dsn = "postgres://postgres@127.0.0.1/postgres"
}

package "invoicing" {
  source = "file://../packages"

  channel "stable" {
    version = "1.0.0"
  }
}

merchant "acme" {
  package = "invoicing"
  channel = "stable"
  env = {
    LOCALE = "en_US\u0000"
  }
}
