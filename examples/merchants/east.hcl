# Merchants whose data lives on db-east.

merchant "acme" {
  database = "db-east"
  port     = 8101
  env = {
    LOCALE = "zh_CN"
  }
}

merchant "bluebird" {
  database = "db-east"
  channel  = "edge"
  env = {
    LOCALE = "en_US"
  }
}

merchant "cobalt" {
  database = "db-east"
  version  = "1.0.0"
}
