merchant "acme" {
  package = "invoicing"
  version = "1.0.0"
}
