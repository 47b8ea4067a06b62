source { path = "fleet" }

router {
  nginx {
    mode = "apache"
  }
}

router {}
