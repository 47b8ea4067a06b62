# Host config of the example fleet. Relative paths are relative to this file.

source {
  path = "merchants"
}

state {
  path = ".steward/state"
}

runtime {
  root       = ".steward/run"
  ports      = "8100-8199"
  stop_grace = "5s"
  user       = "nobody" # merchants never run as root; used when steward is root
}

api {
  listen = "127.0.0.1:7070"
}
