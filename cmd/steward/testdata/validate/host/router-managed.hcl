source { path = "fleet" }

# A managed nginx needs listen, and has no include file or commands of the
# system's nginx.
router {
  nginx {
    include_file   = "steward.conf"
    reload_command = []
    retry_after    = "1500ms"
  }
}
