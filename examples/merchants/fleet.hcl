# Fleet-wide settings of the example invoicing service.

database "db-east" {
  dsn = env("DB_EAST_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
}

database "db-west" {
  dsn = env("DB_WEST_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
}

package "invoicing" {
  source = "file://../packages"

  channel "stable" {
    version = "1.0.0"
  }

  channel "edge" {
    version = "1.1.0"
  }
}

rollout {
  canary           = 1
  max_parallel     = 2
  max_failures     = 1
  health_deadline  = "10s"
  min_healthy_time = "2s"
}

defaults {
  package          = "invoicing"
  channel          = "stable"
  on_database_down = "hold"

  health {
    http     = "/health"
    interval = "5s"
    timeout  = "2s"
    failures = 3
  }
}
