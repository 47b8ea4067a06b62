database "db-east" {
  dsn = "postgres://postgres@127.0.0.1/postgres"
}

package "invoicing" {
  source = "file://../packages"

  channel "stable" {
    version = "1.0.0"
  }
}

merchant "postgres" {
  package  = "invoicing"
  channel  = "stable"
  database = "db-east"
}

merchant "acme" {
  package  = "invoicing"
  channel  = "stable"
  database = "db-east"
  db_name  = "template1"
}
