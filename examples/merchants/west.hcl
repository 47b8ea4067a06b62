# Merchants whose data lives on db-west.

merchant "dune" {
  database = "db-west"
  env = {
    LOCALE      = "de_DE"
    PAYMENT_KEY = env("DUNE_PAYMENT_KEY", "demo-key")
  }
}

merchant "ember" {
  database = "db-west"
  channel  = "edge"
}

merchant "fjord" {
  database = "db-west"
  port     = 8106
  env = {
    LOCALE   = "nb_NO"
    SMTP_PWD = "example-only"
  }
  sensitive = ["SMTP_PWD"]
}
