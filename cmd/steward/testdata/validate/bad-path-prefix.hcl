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
  package     = "invoicing"
  channel     = "stable"
  path_prefix = "/acme"
}

merchant "bravo" {
  package     = "invoicing"
  channel     = "stable"
  path_prefix = "/bravo/../x/"
}

merchant "charlie" {
  package     = "invoicing"
  channel     = "stable"
  path_prefix = "/shop/"
}

merchant "delta" {
  package     = "invoicing"
  channel     = "stable"
  path_prefix = "/shop/"
}
