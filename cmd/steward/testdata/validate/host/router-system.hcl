source { path = "fleet" }

# A system nginx needs include_file.
router {
  nginx {
    mode               = "system"
    listen             = "127.0.0.1"
    proxy_read_timeout = "0s"
  }
}
